/* harness.h: what the lifecycle checks (harness.c) and the scripted mode (script.c) share. */
#ifndef HARNESS_H
#define HARNESS_H

#include <sys/types.h>
#include "lock_driver.h"

typedef struct {
    int type;               /* RESOURCE_TYPE_DISK / _LEASE (or anything, to test refusal) */
    const char *name;       /* disk path / lease key */
    unsigned int flags;     /* READONLY / SHARED */
} res_t;

typedef struct {
    unsigned char uuid[16];
    char name[32];
    unsigned int id;
    pid_t pid;
    char *state;            /* libvirt's priv->lockState */
} vm_t;

enum op { START, RESUME, PAUSE, ATTACH, DETACH, INQUIRE };

extern lock_driver *drv;
extern char err[1024];   /* the plugin's last error message, after a failed call */

void take_error(void);
int lock_op(vm_t *vm, enum op op, const res_t *res, int nres, char **state_out);
int vm_start(vm_t *vm, const res_t *res, int nres);
void vm_kill(vm_t *vm);
double now_ms(void);
int run_script(const char *so, const char *conf, int nsteps, char **steps);

#endif
