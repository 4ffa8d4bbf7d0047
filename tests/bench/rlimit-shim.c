/* rlimit-shim.c: LD_PRELOAD for the sanlock daemon where root lacks CAP_SYS_RESOURCE (some
 * containers). sanlock raises RLIMIT_MEMLOCK, _RTPRIO, _CORE and _NOFILE to infinity at start
 * and exits ("cannot set the limits for memlock") if that fails; this lowers a refused request
 * to the hard limit in force and tries again. Not needed on an ordinary host. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/resource.h>

typedef int (*setrlimit_fn)(__rlimit_resource_t, const struct rlimit *);

static int clamped(setrlimit_fn real, __rlimit_resource_t res, const struct rlimit *want)
{
    struct rlimit now, lim;
    int rc = real(res, want);
    if (rc == 0 || errno != EPERM || getrlimit(res, &now) < 0)
        return rc;
    lim = *want;
    if (lim.rlim_max > now.rlim_max)
        lim.rlim_max = now.rlim_max;
    if (lim.rlim_cur > lim.rlim_max)
        lim.rlim_cur = lim.rlim_max;
    return real(res, &lim);
}

int setrlimit(__rlimit_resource_t res, const struct rlimit *want)
{
    static setrlimit_fn real;
    if (!real)
        real = (setrlimit_fn)dlsym(RTLD_NEXT, "setrlimit");
    return clamped(real, res, want);
}

/* x86_64: struct rlimit64 and struct rlimit are the same */
int setrlimit64(__rlimit_resource_t res, const struct rlimit64 *want)
{
    static setrlimit_fn real;
    if (!real)
        real = (setrlimit_fn)dlsym(RTLD_NEXT, "setrlimit64");
    return clamped(real, res, (const struct rlimit *)want);
}
