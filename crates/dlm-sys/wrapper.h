/* libdlm.h uses mode_t and uint32_t without including their headers. */
#include <sys/types.h>
#include <stdint.h>
#include <libdlm.h>
