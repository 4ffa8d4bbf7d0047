/* libvirt's lock-driver ABI (src/locking/lock_driver.h, libvirt 9.0, VIR_LOCK_MANAGER_VERSION
 * 1000000). libvirt does not install this header, so plugins and this harness declare it. */
#ifndef VIRT_DLM_LOCK_DRIVER_H
#define VIRT_DLM_LOCK_DRIVER_H
#include <stddef.h>

#define LOCK_MANAGER_VERSION 1000000
enum { OBJECT_TYPE_DOMAIN = 0 };
enum { RESOURCE_TYPE_DISK = 0, RESOURCE_TYPE_LEASE = 1 };
enum { RESOURCE_READONLY = 1 << 0, RESOURCE_SHARED = 1 << 1 };
enum { ACQUIRE_REGISTER_ONLY = 1 << 0, ACQUIRE_RESTRICT = 1 << 1 };
enum { NEW_STARTED = 1 << 0 };
enum { PARAM_STRING, PARAM_CSTRING, PARAM_INT, PARAM_LONG, PARAM_UINT, PARAM_ULONG, PARAM_DOUBLE, PARAM_UUID };

typedef struct lock_driver lock_driver;
typedef struct { lock_driver *driver; void *private_data; } lock_manager;
typedef struct {
    int type;
    const char *key;
    union {
        int iv; long long l; unsigned int ui; unsigned long long ul; double d;
        char *str; const char *cstr; unsigned char uuid[16];
    } value;
} lock_param;

struct lock_driver {
    unsigned int version;
    unsigned int flags;
    int (*init)(unsigned int version, const char *config_file, unsigned int flags);
    int (*deinit)(void);
    int (*new_)(lock_manager *man, unsigned int type, size_t nparams, lock_param *params, unsigned int flags);
    void (*free_)(lock_manager *man);
    int (*add_resource)(lock_manager *man, unsigned int type, const char *name, size_t nparams,
                        lock_param *params, unsigned int flags);
    int (*acquire)(lock_manager *man, const char *state, unsigned int flags, int action, int *fd);
    int (*release)(lock_manager *man, char **state, unsigned int flags);
    int (*inquire)(lock_manager *man, char **state, unsigned int flags);
};

_Static_assert(sizeof(lock_param) == 32, "virLockManagerParam is 32 bytes");
_Static_assert(offsetof(lock_param, value) == 16, "param value at 16");
_Static_assert(sizeof(struct lock_driver) == 72, "virLockDriver is 72 bytes");
_Static_assert(sizeof(lock_manager) == 16, "virLockManager is 16 bytes");
#endif
