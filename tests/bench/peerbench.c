/*
 * peerbench.c: times libvirt's lock call sequences against any lock-manager plugin (.so),
 * through the lock-driver ABI exactly as libvirt 9.0's QEMU driver calls it (see
 * tests/abi/harness.c): libvirt.so.0 loaded and virInitialize() run first (as in libvirtd;
 * lockd.so and sanlock.so crash without it), dlopen(RTLD_NOW|RTLD_LOCAL), init, then one
 * short-lived manager per operation: new -> add_resource* -> acquire|release -> free.
 *
 * One iteration, with a fresh VM (uuid, name, id) and N disks:
 *   start     fork(); the child registers (new NEW_STARTED, N disks, acquire
 *             REGISTER_ONLY|RESTRICT) and execs `sleep`, keeping any fd the plugin returned:
 *             that process is the VM's QEMU. Timed inside the child.
 *   resume    acquire the N disks                       pause   release them (state kept)
 *   (resume with the saved state, untimed: the VM holds its disks again)
 *   attach    hotplug: acquire one more disk            detach  release it
 *   conflict  a second VM registers on disk 0 and its resume must be refused (counted)
 *   free      SIGKILL of the first VM's QEMU (no plugin call, as in libvirt), reaped at
 *             once; the second VM retries its resume every millisecond: time from kill()
 *             to the granted acquire
 * Then the concurrent phase: V VMs of N disks of their own, each started (register) and
 * resumed (acquire) by its own worker process at the same moment; wall time from the start
 * signal to the last granted resume, per round (the first round is unmeasured: it lets the
 * plugins create their lease files).
 *
 *   peerbench -p PLUGIN.so -c CONF -d DIR -l LABEL [-k ITER] [-n DISKS] [-V VMS] [-r ROUNDS]
 *             [-x] [-o OUT.json]
 *   -x  the plugin locks nothing (nop): a granted conflict is expected, not an error
 * Disk files are created under DIR. Prints a summary; writes the figures as JSON to OUT.
 * Exits 1 if any operation failed or a conflict was granted.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../abi/lock_driver.h"

static lock_driver *drv;
static const char *(*last_error)(void);
static void (*reset_error)(void);
static unsigned char uuid_base[16];

typedef struct {
    unsigned char uuid[16];
    char name[48];
    unsigned int id;
    pid_t pid;        /* the VM's "QEMU" */
    char *state;      /* what release returned (libvirt's priv->lockState) */
    int ndisks;
    char **disks;
} vm_t;

enum op { START, RESUME, PAUSE, ATTACH, DETACH };

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void error_text(char *buf, size_t len)
{
    const char *m = last_error ? last_error() : NULL;
    snprintf(buf, len, "%s", m ? m : "(no error message)");
    if (reset_error)
        reset_error();
}

/* A VM identity no other run shares: random base, serial in the last bytes. */
static void vm_init(vm_t *vm, unsigned int serial, const char *tag, int ndisks, char **disks)
{
    memset(vm, 0, sizeof(*vm));
    memcpy(vm->uuid, uuid_base, 16);
    vm->uuid[6] = (vm->uuid[6] & 0x0f) | 0x40;
    vm->uuid[8] = (vm->uuid[8] & 0x3f) | 0x80;
    vm->uuid[12] = serial >> 24;
    vm->uuid[13] = serial >> 16;
    vm->uuid[14] = serial >> 8;
    vm->uuid[15] = serial;
    snprintf(vm->name, sizeof(vm->name), "pb%d-%s-%u", (int)getpid(), tag, serial);
    vm->id = serial + 1;   /* lockd refuses id 0 */
    vm->ndisks = ndisks;
    vm->disks = disks;
}

/* One libvirt lock call (virDomainLock*): returns the plugin's rc, the message in err. */
static int lock_op(vm_t *vm, enum op op, int ndisks, char **disks, char *err, size_t errlen)
{
    lock_manager man = { drv, NULL };
    lock_param p[5];
    int rc;

    memset(p, 0, sizeof(p));
    p[0].type = PARAM_UUID;    p[0].key = "uuid"; memcpy(p[0].value.uuid, vm->uuid, 16);
    p[1].type = PARAM_STRING;  p[1].key = "name"; p[1].value.str = vm->name;
    p[2].type = PARAM_UINT;    p[2].key = "id";   p[2].value.iv = (int)vm->id;
    p[3].type = PARAM_UINT;    p[3].key = "pid";  p[3].value.iv = (int)vm->pid;
    p[4].type = PARAM_CSTRING; p[4].key = "uri";
    p[4].value.cstr = (op == PAUSE || op == DETACH) ? NULL : "qemu:///system";   /* as libvirt */

    if (drv->new_(&man, OBJECT_TYPE_DOMAIN, 5, p, op == START ? NEW_STARTED : 0) < 0) {
        error_text(err, errlen);
        return -1;
    }
    for (int i = 0; i < ndisks; i++) {
        if (drv->add_resource(&man, RESOURCE_TYPE_DISK, disks[i], 0, NULL, 0) < 0) {
            error_text(err, errlen);
            drv->free_(&man);
            return -1;
        }
    }
    switch (op) {
    case START: {
        int fd = -1;
        rc = drv->acquire(&man, NULL, ACQUIRE_REGISTER_ONLY | ACQUIRE_RESTRICT, 0, &fd);
        break;
    }
    case RESUME:
        rc = drv->acquire(&man, vm->state, 0, 0, NULL);
        if (rc == 0) {
            free(vm->state);
            vm->state = NULL;
        }
        break;
    case ATTACH:
        rc = drv->acquire(&man, NULL, 0, 0, NULL);
        break;
    case PAUSE: {
        char *s = NULL;
        rc = drv->release(&man, &s, 0);
        if (rc == 0) {
            free(vm->state);
            vm->state = s;
        }
        break;
    }
    case DETACH:
        rc = drv->release(&man, NULL, 0);
        break;
    default:
        rc = -1;
    }
    if (rc < 0)
        error_text(err, errlen);
    drv->free_(&man);
    return rc;
}

typedef struct {
    int rc;
    double us;
    char err[400];
} child_report;

/* Forks the VM's QEMU: the child registers, reports, then execs sleep. Returns 0 and the
 * child-side time of the register call in *us, or -1 with the message in err. */
static int vm_start(vm_t *vm, double *us, char *err, size_t errlen)
{
    int p[2];
    child_report r;
    if (pipe2(p, O_CLOEXEC) < 0)
        return snprintf(err, errlen, "pipe2: %s", strerror(errno)), -1;
    pid_t pid = fork();
    if (pid < 0)
        return snprintf(err, errlen, "fork: %s", strerror(errno)), -1;
    if (pid == 0) {
        close(p[0]);
        memset(&r, 0, sizeof(r));
        vm->pid = getpid();            /* libvirt's hook sets the pid of the process itself */
        double t0 = now_us();
        r.rc = lock_op(vm, START, vm->ndisks, vm->disks, r.err, sizeof(r.err));
        r.us = now_us() - t0;
        if (write(p[1], &r, sizeof(r)) != (ssize_t)sizeof(r) || r.rc < 0)
            _exit(1);
        execl("/bin/sleep", "sleep", "100000", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    ssize_t n = read(p[0], &r, sizeof(r));
    close(p[0]);
    if (n != (ssize_t)sizeof(r) || r.rc < 0) {
        snprintf(err, errlen, "%s", n == (ssize_t)sizeof(r) ? r.err : "the child died before registering");
        waitpid(pid, NULL, 0);
        return -1;
    }
    vm->pid = pid;
    *us = r.us;
    return 0;
}

static void vm_kill(vm_t *vm)
{
    if (vm->pid > 0) {
        kill(vm->pid, SIGKILL);
        while (waitpid(vm->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        vm->pid = 0;
    }
}

/* ------------------------------------------------------------------ statistics */

enum { S_START, S_RESUME, S_PAUSE, S_ATTACH, S_DETACH, S_FREE, S_LAST };
static const char *s_name[S_LAST] = { "start", "resume", "pause", "attach", "detach", "free" };
static double *samples[S_LAST];
static int nsamples[S_LAST];

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* nearest rank */
static double pct(const double *s, int n, double p)
{
    if (n == 0)
        return 0;
    int k = (int)(p * n + 0.999999) - 1;
    return s[k < 0 ? 0 : k >= n ? n - 1 : k];
}

static void stats_json(FILE *f, const double *s, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += s[i];
    fprintf(f, "{\"n\": %d, \"median_us\": %.1f, \"p99_us\": %.1f, \"mean_us\": %.1f, \"max_us\": %.1f}", n,
            pct(s, n, 0.5), pct(s, n, 0.99), n ? sum / n : 0, n ? s[n - 1] : 0);
}

/* Records the time since t0 (taken just before the call) when rc says it succeeded. */
static int timed(int slot, double t0, int rc)
{
    if (rc == 0)
        samples[slot][nsamples[slot]++] = now_us() - t0;
    return rc;
}

/* ------------------------------------------------------------------ disks */

static char *make_disk(const char *dir, const char *fmt, int a, int b)
{
    char *path, name[64];
    snprintf(name, sizeof(name), fmt, a, b);
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        exit(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, 1 << 20) < 0) {
        fprintf(stderr, "cannot create %s: %s\n", path, strerror(errno));
        exit(2);
    }
    close(fd);
    return path;
}

/* ------------------------------------------------------------------ concurrent starts */

typedef struct {
    int rc;
    int index;
    pid_t qemu;
    char err[400];
} worker_report;

/* One round: V workers wait on `go`, then each starts and resumes its own VM. Returns the
 * wall time in µs from the start signal to the last report; *errors counts failed VMs. */
static double concurrent_round(int vms, int ndisks, char ***disks, unsigned int serial0, int *errors)
{
    int go[2], res[2];
    pid_t *workers = calloc(vms, sizeof(pid_t));
    vm_t *vm = calloc(vms, sizeof(vm_t));
    if (pipe2(go, O_CLOEXEC) < 0 || pipe2(res, O_CLOEXEC) < 0 || !workers || !vm)
        exit(2);
    for (int i = 0; i < vms; i++) {
        vm_init(&vm[i], serial0 + i, "c", ndisks, disks[i]);
        pid_t w = fork();
        if (w < 0) {
            perror("fork");
            exit(2);
        }
        if (w == 0) {
            worker_report r;
            char c;
            double us;
            memset(&r, 0, sizeof(r));
            close(go[1]);
            close(res[0]);
            if (read(go[0], &c, 1) < 0)   /* EOF when the parent closes its end: all start */
                _exit(1);
            r.rc = vm_start(&vm[i], &us, r.err, sizeof(r.err));
            if (r.rc == 0)
                r.rc = lock_op(&vm[i], RESUME, ndisks, disks[i], r.err, sizeof(r.err));
            r.index = i;
            r.qemu = vm[i].pid;
            /* the QEMU outlives this worker: it is reparented to the benchmark (subreaper) */
            if (write(res[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
                _exit(1);
            _exit(0);
        }
        workers[i] = w;
    }
    close(go[0]);
    close(res[1]);
    usleep(200000);   /* let every worker reach its read() */
    double t0 = now_us();
    close(go[1]);
    int got = 0;
    worker_report r;
    /* reports are atomic pipe writes (< PIPE_BUF) */
    while (got < vms && read(res[0], &r, sizeof(r)) == (ssize_t)sizeof(r)) {
        if (r.rc < 0) {
            (*errors)++;
            fprintf(stderr, "concurrent start failed: %s\n", r.err);
        }
        if (r.index >= 0 && r.index < vms)
            vm[r.index].pid = r.qemu;
        got++;
    }
    double wall = now_us() - t0;
    close(res[0]);
    if (got < vms) {
        *errors += vms - got;
        fprintf(stderr, "concurrent phase: %d of %d workers never reported\n", vms - got, vms);
    }
    for (int i = 0; i < vms; i++)
        waitpid(workers[i], NULL, 0);
    /* untimed cleanup: pause every VM (the pid is not needed to release), then kill its QEMU */
    char err[400];
    for (int i = 0; i < vms; i++) {
        if (vm[i].pid > 0)
            lock_op(&vm[i], PAUSE, ndisks, disks[i], err, sizeof(err));
        free(vm[i].state);
        vm_kill(&vm[i]);
    }
    free(workers);
    free(vm);
    return wall;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    const char *so = NULL, *conf = NULL, *dir = NULL, *label = NULL, *out = NULL;
    int iters = 100, ndisks = 4, vms = 100, rounds = 3, no_locks = 0, opt;
    while ((opt = getopt(argc, argv, "p:c:d:l:k:n:V:r:xo:")) != -1) {
        switch (opt) {
        case 'p': so = optarg; break;
        case 'c': conf = optarg; break;
        case 'd': dir = optarg; break;
        case 'l': label = optarg; break;
        case 'k': iters = atoi(optarg); break;
        case 'n': ndisks = atoi(optarg); break;
        case 'V': vms = atoi(optarg); break;
        case 'r': rounds = atoi(optarg); break;
        case 'x': no_locks = 1; break;
        case 'o': out = optarg; break;
        default: goto usage;
        }
    }
    if (!so || !conf || !dir || !label || iters < 1 || ndisks < 1 || vms < 0 || rounds < 1)
        goto usage;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_CHILD_SUBREAPER, 1);   /* the concurrent VMs' QEMUs come back to us */

    int ur = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (ur < 0 || read(ur, uuid_base, 16) != 16)
        return perror("/dev/urandom"), 2;
    close(ur);

    void *lv = dlopen("libvirt.so.0", RTLD_NOW | RTLD_GLOBAL);
    int (*vir_initialize)(void) = lv ? (int (*)(void))dlsym(lv, "virInitialize") : NULL;
    if (!vir_initialize || vir_initialize() < 0) {
        fprintf(stderr, "cannot load libvirt.so.0 and run virInitialize: %s\n", dlerror());
        return 2;
    }
    last_error = (const char *(*)(void))dlsym(lv, "virGetLastErrorMessage");
    reset_error = (void (*)(void))dlsym(lv, "virResetLastError");
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h || !(drv = dlsym(h, "virLockDriverImpl"))) {
        fprintf(stderr, "cannot load virLockDriverImpl from %s: %s\n", so, dlerror());
        return 2;
    }

    char **disks = calloc(ndisks, sizeof(char *));
    for (int i = 0; i < ndisks; i++)
        disks[i] = make_disk(dir, "disk%d.img", i, 0);
    char *hot[1] = { make_disk(dir, "hot.img", 0, 0) };
    char ***cdisks = calloc(vms, sizeof(char **));
    for (int v = 0; v < vms; v++) {
        cdisks[v] = calloc(ndisks, sizeof(char *));
        for (int i = 0; i < ndisks; i++)
            cdisks[v][i] = make_disk(dir, "vm%d-disk%d.img", v, i);
    }
    for (int s = 0; s < S_LAST; s++)
        samples[s] = calloc(iters, sizeof(double));

    char err[400];
    double t0 = now_us();
    if (drv->init(LOCK_MANAGER_VERSION, conf, 0) < 0) {
        error_text(err, sizeof(err));
        fprintf(stderr, "%s: init failed: %s\n", label, err);
        return 1;
    }
    double init_us = now_us() - t0;
    printf("%s: init %.0f us; %d iterations of %d disks\n", label, init_us, iters, ndisks);

    int errors = 0, refused = 0, tried = 0, granted_conflicts = 0;
    unsigned int serial = 0;
#define FAIL(what) do { errors++; fprintf(stderr, "%s: iteration %d: %s: %s\n", label, it, what, err); } while (0)
    for (int it = 0; it < iters; it++) {
        vm_t vm1, vm2;
        double us;
        vm_init(&vm1, serial++, "a", ndisks, disks);
        vm_init(&vm2, serial++, "b", 1, disks);
        if (vm_start(&vm1, &us, err, sizeof(err)) < 0) {
            FAIL("start");
            continue;
        }
        samples[S_START][nsamples[S_START]++] = us;
        t0 = now_us();
        if (timed(S_RESUME, t0, lock_op(&vm1, RESUME, ndisks, disks, err, sizeof(err))) < 0)
            FAIL("resume");
        t0 = now_us();
        if (timed(S_PAUSE, t0, lock_op(&vm1, PAUSE, ndisks, disks, err, sizeof(err))) < 0)
            FAIL("pause");
        if (lock_op(&vm1, RESUME, ndisks, disks, err, sizeof(err)) < 0)
            FAIL("resume with the saved state");
        t0 = now_us();
        if (timed(S_ATTACH, t0, lock_op(&vm1, ATTACH, 1, hot, err, sizeof(err))) < 0)
            FAIL("hotplug attach");
        t0 = now_us();
        if (timed(S_DETACH, t0, lock_op(&vm1, DETACH, 1, hot, err, sizeof(err))) < 0)
            FAIL("hotplug detach");

        if (vm_start(&vm2, &us, err, sizeof(err)) < 0) {
            FAIL("second VM start");
            vm_kill(&vm1);
            free(vm1.state);
            continue;
        }
        tried++;
        if (lock_op(&vm2, RESUME, 1, disks, err, sizeof(err)) < 0) {
            refused++;
        } else {
            granted_conflicts++;
            lock_op(&vm2, PAUSE, 1, disks, err, sizeof(err));
        }
        double k0 = now_us();
        vm_kill(&vm1);
        int rc;
        while ((rc = lock_op(&vm2, RESUME, 1, disks, err, sizeof(err))) < 0 && now_us() - k0 < 30e6)
            usleep(1000);
        if (rc == 0)
            samples[S_FREE][nsamples[S_FREE]++] = now_us() - k0;
        else
            FAIL("the first VM's disk never came free after its QEMU was killed");
        if (lock_op(&vm2, PAUSE, 1, disks, err, sizeof(err)) < 0)
            FAIL("second VM pause");
        vm_kill(&vm2);
        free(vm1.state);
        free(vm2.state);
    }

    double *walls = calloc(rounds, sizeof(double));
    int cerrors = 0, measured = 0;
    for (int r = 0; vms > 0 && r < rounds; r++) {
        double w = concurrent_round(vms, ndisks, cdisks, 1000000u * (r + 1), &cerrors);
        if (r > 0 || rounds == 1)
            walls[measured++] = w;
        printf("%s: %d VMs x %d disks started concurrently in %.1f ms%s\n", label, vms, ndisks, w / 1e3,
               r == 0 && rounds > 1 ? " (warm-up, not counted)" : "");
    }
    qsort(walls, measured, sizeof(double), cmp_double);
    double wall = measured ? pct(walls, measured, 0.5) : 0;
    errors += cerrors;

    for (int s = 0; s < S_LAST; s++) {
        qsort(samples[s], nsamples[s], sizeof(double), cmp_double);
        printf("%s: %-7s median %10.1f us  p99 %10.1f us  (%d)\n", label, s_name[s],
               pct(samples[s], nsamples[s], 0.5), pct(samples[s], nsamples[s], 0.99), nsamples[s]);
    }
    printf("%s: conflicts refused %d of %d; errors %d\n", label, refused, tried, errors);
    drv->deinit();

    if (out) {
        FILE *f = fopen(out, "w");
        if (!f)
            return perror(out), 2;
        fprintf(f, "{\"label\": \"%s\", \"plugin\": \"%s\", \"iterations\": %d, \"disks\": %d, \"init_us\": %.1f,\n",
                label, so, iters, ndisks, init_us);
        fprintf(f, " \"ops\": {");
        for (int s = 0; s < S_LAST; s++) {
            fprintf(f, "%s\n  \"%s\": ", s ? "," : "", s_name[s]);
            stats_json(f, samples[s], nsamples[s]);
        }
        fprintf(f, "},\n \"conflicts\": {\"tried\": %d, \"refused\": %d},\n", tried, refused);
        fprintf(f, " \"concurrent\": {\"vms\": %d, \"disks\": %d, \"rounds_measured\": %d, \"wall_ms\": %.2f, "
                   "\"vm_starts_per_s\": %.1f, \"disk_locks_per_s\": %.1f, \"plugin_calls_per_s\": %.1f},\n",
                vms, ndisks, measured, wall / 1e3, wall > 0 ? vms / (wall / 1e6) : 0,
                wall > 0 ? vms * ndisks / (wall / 1e6) : 0, wall > 0 ? 2 * vms / (wall / 1e6) : 0);
        fprintf(f, " \"errors\": %d}\n", errors);
        fclose(f);
    }
    return errors || (!no_locks && granted_conflicts) ? 1 : 0;
usage:
    fprintf(stderr, "usage: %s -p PLUGIN.so -c CONF -d DIR -l LABEL [-k ITER] [-n DISKS] [-V VMS] [-r ROUNDS] "
                    "[-x] [-o OUT.json]\n", argv[0]);
    return 2;
}
