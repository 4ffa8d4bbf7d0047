/*
 * harness.c: drives a libvirt lock plugin (.so) through the lock-driver ABI exactly as
 * libvirt 9.0's QEMU driver does (src/locking/lock_manager.c, domain_lock.c):
 * dlopen(RTLD_NOW|RTLD_LOCAL), dlsym("virLockDriverImpl"), init(1000000, conf, 0), then one
 * short-lived manager per operation: new -> add_resource* -> acquire|release|inquire -> free.
 * VM start runs in a forked child that registers and then execs a long sleep (the "QEMU").
 *
 * The same code runs against dlm.so and libvirt's own lockd.so (the reference); -k names the
 * plugin so the few checks where the two differ by design expect the right thing.
 * libvirt.so.0 is loaded first and virInitialize() called, as libvirtd does; plugins report
 * errors through it and the harness reads them back with virGetLastErrorMessage().
 *
 *   harness -p PLUGIN.so -c CONF -b BAD_CONF -d WORKDIR -k dlm|lockd
 * Prints PASS/FAIL per check and "N passed, N failed"; exits 1 if anything failed.
 *
 *   harness -p PLUGIN.so -c CONF -s STEP...
 * Scripted mode (script.c): runs the given lifecycle steps in order, one JSON line per step,
 * so that a test on several hosts can interleave them.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lock_driver.h"
#include "harness.h"

lock_driver *drv;
static const char *(*last_error)(void);
static void (*reset_error)(void);
static int passed, failed;
static int is_dlm;
char err[1024];

static void check(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "PASS" : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    if (ok)
        passed++;
    else
        failed++;
}

void take_error(void)
{
    const char *m = last_error ? last_error() : NULL;
    snprintf(err, sizeof(err), "%s", m ? m : "(no error reported)");
    if (reset_error)
        reset_error();
}

/* ------------------------------------------------------------------ resources and VMs */

static char lease_path[512];

static void vm_init(vm_t *vm, int n)
{
    memset(vm, 0, sizeof(*vm));
    for (int i = 0; i < 16; i++)
        vm->uuid[i] = (unsigned char)(0x10 * n + i + (getpid() & 0xff));
    snprintf(vm->name, sizeof(vm->name), "abi-vm%d-%d", n, (int)getpid());
    vm->id = (unsigned int)n;
}


/* One libvirt lock operation. Returns the plugin's rc; on failure the message is in err. */
int lock_op(vm_t *vm, enum op op, const res_t *res, int nres, char **state_out)
{
    lock_manager man = { drv, NULL };
    lock_param p[5];
    int rc;

    memset(p, 0, sizeof(p));
    p[0].type = PARAM_UUID;   p[0].key = "uuid"; memcpy(p[0].value.uuid, vm->uuid, 16);
    p[1].type = PARAM_STRING; p[1].key = "name"; p[1].value.str = vm->name;
    p[2].type = PARAM_UINT;   p[2].key = "id";   p[2].value.iv = (int)vm->id;
    p[3].type = PARAM_UINT;   p[3].key = "pid";  p[3].value.iv = (int)vm->pid;
    p[4].type = PARAM_CSTRING; p[4].key = "uri";
    /* libvirt passes no uri on the release paths */
    p[4].value.cstr = (op == PAUSE || op == DETACH || op == INQUIRE) ? NULL : "qemu:///system";

    if (drv->new_(&man, OBJECT_TYPE_DOMAIN, 5, p, op == START ? NEW_STARTED : 0) < 0) {
        take_error();
        return -1;
    }
    for (int i = 0; i < nres; i++) {
        lock_param lp[3];
        size_t nlp = 0;
        if (res[i].type == RESOURCE_TYPE_LEASE) {
            memset(lp, 0, sizeof(lp));
            lp[0].type = PARAM_STRING; lp[0].key = "path"; lp[0].value.str = lease_path;
            lp[1].type = PARAM_ULONG; lp[1].key = "offset"; lp[1].value.ul = 0;
            lp[2].type = PARAM_STRING; lp[2].key = "lockspace"; lp[2].value.str = "space";
            nlp = 3;
        }
        if (drv->add_resource(&man, res[i].type, res[i].name, nlp, nlp ? lp : NULL, res[i].flags) < 0) {
            take_error();
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
        break;
    case ATTACH:
        rc = drv->acquire(&man, NULL, 0, 0, NULL);
        break;
    case PAUSE: {
        char *s = NULL;
        rc = drv->release(&man, &s, 0);
        if (rc == 0) {
            free(vm->state);      /* what libvirt does with priv->lockState */
            vm->state = s;
        }
        break;
    }
    case DETACH:
        rc = drv->release(&man, NULL, 0);
        break;
    case INQUIRE:
        rc = drv->inquire(&man, state_out, 0);
        break;
    default:
        rc = -1;
    }
    if (rc < 0)
        take_error();
    drv->free_(&man);
    return rc;
}

/* Forks the "QEMU": the child registers (New NEW_STARTED + resources + Acquire
 * REGISTER_ONLY|RESTRICT + Free) and execs sleep, keeping any fd the plugin returned. */
int vm_start(vm_t *vm, const res_t *res, int nres)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(pfd[0]);
        vm->pid = getpid();
        if (lock_op(vm, START, res, nres, NULL) < 0) {
            if (write(pfd[1], err, strlen(err)) < 0)
                _exit(3);
            _exit(1);
        }
        execl("/bin/sleep", "sleep", "100000", (char *)NULL);
        _exit(2);
    }
    close(pfd[1]);
    ssize_t n = read(pfd[0], err, sizeof(err) - 1);
    close(pfd[0]);
    vm->pid = pid;
    if (n > 0) {
        err[n] = 0;
        waitpid(pid, NULL, 0);
        vm->pid = 0;
        return -1;
    }
    return 0;
}

void vm_kill(vm_t *vm)
{
    if (vm->pid > 0) {
        kill(vm->pid, SIGKILL);
        waitpid(vm->pid, NULL, 0);
        vm->pid = 0;
    }
}

static int xml_safe(const char *s)
{
    return !s || strpbrk(s, "<>&\"'") == NULL;
}

double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------------ the lifecycles */

int main(int argc, char **argv)
{
    const char *so = NULL, *conf = NULL, *bad_conf = NULL, *dir = NULL, *kind = NULL;
    int opt;
    int scripted = 0;
    while ((opt = getopt(argc, argv, "+p:c:b:d:k:s")) != -1) {
        switch (opt) {
        case 's': scripted = 1; break;
        case 'p': so = optarg; break;
        case 'c': conf = optarg; break;
        case 'b': bad_conf = optarg; break;
        case 'd': dir = optarg; break;
        case 'k': kind = optarg; break;
        default: goto usage;
        }
    }
    if (scripted ? !so || !conf || optind >= argc : !so || !conf || !bad_conf || !dir || !kind)
        goto usage;
    is_dlm = kind && strcmp(kind, "dlm") == 0;

    /* libvirtd has libvirt initialised before any plugin runs (lockd.so depends on it). */
    void *lv = dlopen("libvirt.so.0", RTLD_NOW | RTLD_GLOBAL);
    int (*vir_initialize)(void) = lv ? (int (*)(void))dlsym(lv, "virInitialize") : NULL;
    if (!vir_initialize || vir_initialize() < 0) {
        printf("FAIL cannot load libvirt.so.0 and run virInitialize: %s\n", dlerror());
        printf("0 passed, 1 failed\n");
        return 1;
    }
    last_error = (const char *(*)(void))dlsym(lv, "virGetLastErrorMessage");
    reset_error = (void (*)(void))dlsym(lv, "virResetLastError");
    if (scripted)
        return run_script(so, conf, argc - optind, argv + optind);

    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    check(h != NULL, "dlopen %s (RTLD_NOW|RTLD_LOCAL) %s", so, h ? "" : dlerror());
    if (!h)
        goto out;
    drv = dlsym(h, "virLockDriverImpl");
    check(drv != NULL, "dlsym virLockDriverImpl");
    if (!drv)
        goto out;
    check(drv->version == LOCK_MANAGER_VERSION && drv->init && drv->deinit && drv->new_ && drv->free_ &&
              drv->add_resource && drv->acquire && drv->release && drv->inquire,
          "driver table: version %u, all eight callbacks set (flags %u)", drv->version, drv->flags);

    check(drv->init(LOCK_MANAGER_VERSION, bad_conf, 0) < 0 && (take_error(), strstr(err, bad_conf) != NULL),
          "init with a broken config fails and names the file: %s", err);
    int rc = drv->init(LOCK_MANAGER_VERSION, conf, 0);
    if (rc < 0)
        take_error();
    check(rc == 0, "init(1000000, %s, 0) %s", conf, rc == 0 ? "" : err);
    if (rc < 0)
        goto out;

    char d_rw[512], d_sh[512], d_ro[512], d_hot[512];
    snprintf(d_rw, sizeof d_rw, "%s/rw.img", dir);
    snprintf(d_sh, sizeof d_sh, "%s/shared.img", dir);
    snprintf(d_ro, sizeof d_ro, "%s/base.img", dir);
    snprintf(d_hot, sizeof d_hot, "%s/hot.img", dir);
    snprintf(lease_path, sizeof lease_path, "%s/leases", dir);
    const res_t vm1_res[] = {
        { RESOURCE_TYPE_LEASE, "key-1", 0 },
        { RESOURCE_TYPE_DISK, d_rw, 0 },
        { RESOURCE_TYPE_DISK, d_sh, RESOURCE_SHARED },
        { RESOURCE_TYPE_DISK, d_ro, RESOURCE_READONLY },
    };
    const res_t rw[] = { { RESOURCE_TYPE_DISK, d_rw, 0 } };
    const res_t hot[] = { { RESOURCE_TYPE_DISK, d_hot, 0 } };
    const res_t hot_lease[] = { { RESOURCE_TYPE_LEASE, "key-hot", 0 } };
    vm_t vm1, vm2;
    vm_init(&vm1, 1);
    vm_init(&vm2, 2);

    /* start: the forked child registers and becomes "QEMU"; nothing is locked yet */
    /* lockd takes a <lease> only in a lockspace created beforehand (it never creates one):
     * its VMs get the disks only, and the lease checks below expect its refusal. */
    int nres1 = is_dlm ? 4 : 3;
    const res_t *res1 = is_dlm ? vm1_res : vm1_res + 1;
    rc = vm_start(&vm1, res1, nres1);
    check(rc == 0, "vm1 start (child: new NEW_STARTED + %d resources + acquire REGISTER_ONLY|RESTRICT) %s", nres1,
          rc ? err : "");
    if (rc)
        goto out;
    rc = lock_op(&vm1, RESUME, res1, nres1, NULL);
    check(rc == 0, "vm1 resume: acquire %s rw, shareable and read-only disks %s", is_dlm ? "a lease and" : "the", rc ? err : "");

    /* suspend: libvirt releases twice (STOP event + StopCPUs) */
    rc = lock_op(&vm1, PAUSE, res1, nres1, NULL);
    check(rc == 0 && xml_safe(vm1.state), "vm1 suspend: release, state %s %s", vm1.state ? vm1.state : "(null)",
          rc ? err : "");
    /* the second release of a suspend: dlm.so must accept it; lockd fails it, and libvirt
     * only logs "Unable to release lease" then */
    int rc2 = lock_op(&vm1, PAUSE, res1, nres1, NULL);
    check(is_dlm ? rc2 == 0 && xml_safe(vm1.state) : rc2 < 0, "vm1 suspend: second release %s: %s",
          is_dlm ? "accepted" : "refused by lockd", rc2 ? err : "(accepted)");
    /* while vm1 is paused its disk is free: vm2 can take and give it back */
    rc = vm_start(&vm2, rw, 1);
    check(rc == 0, "vm2 start on vm1's disk (register only, takes nothing) %s", rc ? err : "");
    rc = lock_op(&vm2, ATTACH, rw, 1, NULL);
    rc2 = lock_op(&vm2, DETACH, rw, 1, NULL);
    check(rc == 0 && rc2 == 0, "vm2 takes and releases the disk while vm1 is paused %s", rc ? err : "");
    rc = lock_op(&vm1, RESUME, res1, nres1, NULL);
    check(rc == 0, "vm1 resume with the saved state %s", rc ? err : "");

    /* a second VM on a held disk is refused, and the message names disk (and holder) */
    rc = lock_op(&vm2, RESUME, rw, 1, NULL);
    int named = strstr(err, d_rw) != NULL && (!is_dlm || strstr(err, vm1.name) != NULL);
    check(rc < 0 && named, "vm2 resume on vm1's disk refused: %s", rc < 0 ? err : "(granted!)");

    /* hotplug: one disk, one lease */
    rc = lock_op(&vm1, ATTACH, hot, 1, NULL);
    check(rc == 0, "vm1 attach-disk %s", rc ? err : "");
    rc = lock_op(&vm2, ATTACH, hot, 1, NULL);
    check(rc < 0, "vm2 attach of vm1's hot disk refused: %s", rc < 0 ? err : "(granted!)");
    rc = lock_op(&vm1, DETACH, hot, 1, NULL);
    check(rc == 0, "vm1 detach-disk %s", rc ? err : "");
    rc = lock_op(&vm2, ATTACH, hot, 1, NULL);
    rc2 = lock_op(&vm2, DETACH, hot, 1, NULL);
    check(rc == 0 && rc2 == 0, "vm2 attaches the disk once vm1 let go, then detaches it %s", rc ? err : "");
    rc = lock_op(&vm1, ATTACH, hot_lease, 1, NULL);
    if (is_dlm) {
        check(rc == 0, "vm1 attach lease %s", rc ? err : "");
        rc = lock_op(&vm2, ATTACH, hot_lease, 1, NULL);
        check(rc < 0, "vm2 attach of vm1's lease refused: %s", rc < 0 ? err : "(granted!)");
        rc = lock_op(&vm1, DETACH, hot_lease, 1, NULL);
        check(rc == 0, "vm1 detach lease %s", rc ? err : "");
        rc = lock_op(&vm2, ATTACH, hot_lease, 1, NULL);
        rc2 = lock_op(&vm2, DETACH, hot_lease, 1, NULL);
        check(rc == 0 && rc2 == 0, "vm2 attaches the lease once vm1 let go, then detaches it %s", rc ? err : "");
    } else {
        check(rc < 0 && strstr(err, "does not exist"), "lockd refuses a lease outside a created lockspace: %s",
              rc < 0 ? err : "(granted!)");
    }

    /* read-only and shareable disks, every pairing with vm1's hold */
    const res_t sh_sh[] = { { RESOURCE_TYPE_DISK, d_sh, RESOURCE_SHARED } };
    const res_t sh_ex[] = { { RESOURCE_TYPE_DISK, d_sh, 0 } };
    const res_t sh_rs[] = { { RESOURCE_TYPE_DISK, d_sh, RESOURCE_SHARED | RESOURCE_READONLY } };
    const res_t ro_ro[] = { { RESOURCE_TYPE_DISK, d_ro, RESOURCE_READONLY } };
    const res_t ro_ex[] = { { RESOURCE_TYPE_DISK, d_ro, 0 } };
    const res_t ro_sh[] = { { RESOURCE_TYPE_DISK, d_ro, RESOURCE_SHARED } };
    const res_t rw_ro[] = { { RESOURCE_TYPE_DISK, d_rw, RESOURCE_READONLY } };
    struct { const char *what; const res_t *r; int dlm_ok, lockd_ok; } mix[] = {
        /* lockd leaves read-only disks unlocked; dlm.so protects them (PR/CR) */
        { "shareable on a shareable disk", sh_sh, 1, 1 },
        { "exclusive on a shareable disk", sh_ex, 0, 0 },
        { "read-only+shareable on a shareable disk", sh_rs, 1, 1 },
        { "read-only on a read-only disk", ro_ro, 1, 1 },
        { "exclusive on a read-only disk", ro_ex, 0, 1 },
        { "shareable on a read-only disk", ro_sh, 0, 1 },
        { "read-only on an exclusive disk", rw_ro, 0, 1 },
    };
    for (size_t i = 0; i < sizeof(mix) / sizeof(mix[0]); i++) {
        int want = is_dlm ? mix[i].dlm_ok : mix[i].lockd_ok;
        rc = lock_op(&vm2, ATTACH, mix[i].r, 1, NULL);
        check((rc == 0) == want, "vm2 %s: %s %s", mix[i].what, want ? "granted" : "refused",
              rc ? err : "(granted)");
        if (rc == 0)
            lock_op(&vm2, DETACH, mix[i].r, 1, NULL);
    }

    /* inquire (migration) and zero-resource calls (cdrom media change) */
    char *st = NULL;
    rc = lock_op(&vm1, INQUIRE, NULL, 0, &st);
    check(rc == 0 && xml_safe(st), "vm1 inquire: state %s %s", st ? st : "(null)", rc ? err : "");
    free(st);
    rc = lock_op(&vm1, ATTACH, NULL, 0, NULL);
    char *saved = vm1.state;
    vm1.state = NULL;
    rc2 = lock_op(&vm1, PAUSE, NULL, 0, NULL);
    check(rc == 0 && rc2 == 0, "acquire and release with zero resources are accepted %s", (rc || rc2) ? err : "");
    free(vm1.state);
    vm1.state = saved;
    rc = lock_op(&vm2, RESUME, rw, 1, NULL);
    check(rc < 0, "vm1 still holds its disk after the zero-resource calls");

    /* unknown types are refused */
    const res_t odd[] = { { 7, d_rw, 0 } };
    rc = lock_op(&vm2, ATTACH, odd, 1, NULL);
    check(rc < 0, "unknown resource type refused: %s", rc < 0 ? err : "(accepted!)");
    {
        lock_manager man = { drv, NULL };
        lock_param p[1];
        memset(p, 0, sizeof p);
        p[0].type = PARAM_STRING; p[0].key = "name"; p[0].value.str = "x";
        rc = drv->new_(&man, 9, 1, p, 0);
        if (rc < 0)
            take_error();
        else
            drv->free_(&man);
        check(rc < 0, "unknown object type refused: %s", rc < 0 ? err : "(accepted!)");
    }

    /* kill -9 of vm1's QEMU: no plugin call; the lock must come free by itself */
    vm_kill(&vm1);
    double t0 = now_ms();
    do {
        rc = lock_op(&vm2, RESUME, rw, 1, NULL);
        if (rc == 0)
            break;
        usleep(20000);
    } while (now_ms() - t0 < 10000);
    check(rc == 0, "after kill -9 of vm1, vm2 gets the disk (%.0f ms) %s", now_ms() - t0, rc ? err : "");

    lock_op(&vm2, PAUSE, rw, 1, NULL);
    vm_kill(&vm2);
    free(vm1.state);
    free(vm2.state);
    check(drv->deinit() == 0, "deinit");
out:
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
usage:
    fprintf(stderr, "usage: %s -p PLUGIN.so -c CONF -b BAD_CONF -d WORKDIR -k dlm|lockd\n"
                    "       %s -p PLUGIN.so -c CONF -s STEP...   (steps: see script.c)\n", argv[0], argv[0]);
    return 2;
}
