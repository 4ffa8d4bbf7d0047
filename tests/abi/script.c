/*
 * script.c: the harness's scripted mode (harness -p PLUGIN.so -c CONF -s STEP...).
 * The same libvirt calls as the lifecycle checks, one step at a time, so that tests spanning
 * several hosts can interleave what each host's "libvirtd" does. Each step prints one line:
 *   {"i":N,"step":"...","rc":0|-1,"error":"<the plugin's message>","pid":N}
 * (the first line, {"ev":"start","pid":N}, names the harness process itself)
 * and the run goes on after a refused step (refusals are what tests look at).
 *
 * A VM is named (its uuid is derived from the name); RES is a comma-separated list of disks
 * MODE=PATH, MODE being how libvirt would describe the disk: rw (plain), sh (<shareable/>),
 * ro (<readonly/>), rosh (both).
 *
 *   start:VM:RES         fork the "QEMU": it registers (REGISTER_ONLY|RESTRICT) and sleeps
 *   resume:VM:RES        acquire with the VM's saved state (libvirt's resume / first start)
 *   pause:VM:RES         release, keeping the returned state (libvirt's suspend)
 *   attach:VM:RES        acquire (hotplug)
 *   detach:VM:RES        release (unplug)
 *   try:VM:RES           attach, and detach again if that was granted (rc of the attach)
 *   until-resume:VM:SECS:RES  resume every 100 ms until granted or SECS pass
 *   kill:VM              kill -9 the VM's "QEMU" (no plugin call)
 *   waitfile:PATH        wait (up to 300 s) until PATH exists
 * At the end every VM still running is killed and the plugin deinitialised. Exit status:
 * 0, or 2 for a step that could not be parsed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define MAX_VMS 8
#define MAX_RES 8

static vm_t vms[MAX_VMS];
static int nvms;

static vm_t *vm_named(const char *name)
{
    for (int i = 0; i < nvms; i++)
        if (strcmp(vms[i].name, name) == 0)
            return &vms[i];
    if (nvms == MAX_VMS)
        return NULL;
    vm_t *vm = &vms[nvms++];
    memset(vm, 0, sizeof(*vm));
    /* FNV-1a of the name spread over the uuid: the same VM name, the same uuid */
    unsigned long long h = 0xcbf29ce484222325ULL;
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
    for (int i = 0; i < 16; i++)
        vm->uuid[i] = (unsigned char)(h >> (8 * (i % 8))) ^ (unsigned char)i;
    snprintf(vm->name, sizeof(vm->name), "%s", name);
    vm->id = (unsigned int)nvms;
    return vm;
}

/* Parses "MODE=PATH,..." in place into res; returns the count or -1. */
static int parse_res(char *spec, res_t *res)
{
    int n = 0;
    for (char *tok = strtok(spec, ","); tok; tok = strtok(NULL, ",")) {
        char *eq = strchr(tok, '=');
        if (!eq || n == MAX_RES)
            return -1;
        *eq = 0;
        unsigned int flags;
        if (strcmp(tok, "rw") == 0)
            flags = 0;
        else if (strcmp(tok, "sh") == 0)
            flags = RESOURCE_SHARED;
        else if (strcmp(tok, "ro") == 0)
            flags = RESOURCE_READONLY;
        else if (strcmp(tok, "rosh") == 0)
            flags = RESOURCE_READONLY | RESOURCE_SHARED;
        else
            return -1;
        res[n].type = RESOURCE_TYPE_DISK;
        res[n].name = eq + 1;
        res[n].flags = flags;
        n++;
    }
    return n;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void report(int i, const char *step, int rc, const vm_t *vm)
{
    printf("{\"i\":%d,\"step\":", i);
    json_str(step);
    printf(",\"rc\":%d", rc);
    if (rc < 0) {
        printf(",\"error\":");
        json_str(err);
    }
    if (vm)
        printf(",\"pid\":%d", (int)vm->pid);
    printf("}\n");
    fflush(stdout);
}

/* One step; returns its rc, or -2 when it cannot be parsed. */
static int run_step(char *s, vm_t **vm_out)
{
    char *op = strtok(s, ":");
    char *name = op ? strtok(NULL, ":") : NULL;
    char *rest = name ? strtok(NULL, "") : NULL;
    res_t res[MAX_RES];
    int nres = 0;

    *vm_out = NULL;
    if (!op || !name)
        return -2;
    if (strcmp(op, "waitfile") == 0) {
        double t0 = now_ms();
        while (access(name, F_OK) != 0) {
            if (now_ms() - t0 > 300000) {
                snprintf(err, sizeof(err), "%s did not appear within 300 s", name);
                return -1;
            }
            usleep(20000);
        }
        return 0;
    }
    vm_t *vm = vm_named(name);
    if (!vm)
        return -2;
    *vm_out = vm;
    if (strcmp(op, "kill") == 0) {
        vm_kill(vm);
        return 0;
    }
    double secs = 0;
    if (strcmp(op, "until-resume") == 0) {
        char *colon = rest ? strchr(rest, ':') : NULL;
        if (!colon)
            return -2;
        *colon = 0;
        secs = atof(rest);
        rest = colon + 1;
    }
    if (!rest || (nres = parse_res(rest, res)) < 0)
        return -2;

    if (strcmp(op, "start") == 0)
        return vm_start(vm, res, nres);
    if (strcmp(op, "resume") == 0)
        return lock_op(vm, RESUME, res, nres, NULL);
    if (strcmp(op, "pause") == 0)
        return lock_op(vm, PAUSE, res, nres, NULL);
    if (strcmp(op, "attach") == 0)
        return lock_op(vm, ATTACH, res, nres, NULL);
    if (strcmp(op, "detach") == 0)
        return lock_op(vm, DETACH, res, nres, NULL);
    if (strcmp(op, "try") == 0) {
        int rc = lock_op(vm, ATTACH, res, nres, NULL);
        if (rc == 0 && lock_op(vm, DETACH, res, nres, NULL) < 0)
            return -1;
        return rc;
    }
    if (strcmp(op, "until-resume") == 0) {
        double t0 = now_ms();
        int rc;
        while ((rc = lock_op(vm, RESUME, res, nres, NULL)) < 0 && now_ms() - t0 < secs * 1000)
            usleep(100000);
        return rc;
    }
    return -2;
}

int run_script(const char *so, const char *conf, int nsteps, char **steps)
{
    printf("{\"ev\":\"start\",\"pid\":%d}\n", (int)getpid());
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    drv = h ? dlsym(h, "virLockDriverImpl") : NULL;
    if (!drv) {
        snprintf(err, sizeof(err), "cannot load virLockDriverImpl from %s: %s", so, dlerror());
        report(0, "init", -1, NULL);
        return 1;
    }
    int rc = drv->init(LOCK_MANAGER_VERSION, conf, 0);
    if (rc < 0)
        take_error();
    report(0, "init", rc, NULL);
    if (rc < 0)
        return 1;

    int status = 0;
    for (int i = 0; i < nsteps; i++) {
        char *copy = strdup(steps[i]);
        vm_t *vm;
        err[0] = 0;
        rc = run_step(copy, &vm);
        free(copy);
        if (rc == -2) {
            snprintf(err, sizeof(err), "cannot parse the step (see tests/abi/script.c)");
            report(i + 1, steps[i], -1, NULL);
            status = 2;
            break;
        }
        report(i + 1, steps[i], rc, vm);
    }
    for (int i = 0; i < nvms; i++) {
        vm_kill(&vms[i]);
        free(vms[i].state);
    }
    drv->deinit();
    return status;
}
