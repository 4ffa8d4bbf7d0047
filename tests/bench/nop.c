/* nop.c: the floor of the peer benchmark, libvirt's built-in "nop" lock manager as a plugin
 * (libvirt's own is compiled into libvirtd, not a .so): every call succeeds and locks nothing. */
#include "../abi/lock_driver.h"

static int nop_init(unsigned int v, const char *c, unsigned int f) { (void)v; (void)c; (void)f; return 0; }
static int nop_deinit(void) { return 0; }
static int nop_new(lock_manager *m, unsigned int t, size_t n, lock_param *p, unsigned int f)
{ (void)m; (void)t; (void)n; (void)p; (void)f; return 0; }
static void nop_free(lock_manager *m) { (void)m; }
static int nop_add(lock_manager *m, unsigned int t, const char *name, size_t n, lock_param *p, unsigned int f)
{ (void)m; (void)t; (void)name; (void)n; (void)p; (void)f; return 0; }
static int nop_acquire(lock_manager *m, const char *s, unsigned int f, int a, int *fd)
{ (void)m; (void)s; (void)f; (void)a; (void)fd; return 0; }
static int nop_release(lock_manager *m, char **s, unsigned int f)
{ (void)m; (void)f; if (s) *s = NULL; return 0; }
static int nop_inquire(lock_manager *m, char **s, unsigned int f)
{ (void)m; (void)f; if (s) *s = NULL; return 0; }

__attribute__((visibility("default"))) lock_driver virLockDriverImpl = {
    .version = LOCK_MANAGER_VERSION, .flags = 0,
    .init = nop_init, .deinit = nop_deinit, .new_ = nop_new, .free_ = nop_free,
    .add_resource = nop_add, .acquire = nop_acquire, .release = nop_release, .inquire = nop_inquire,
};
