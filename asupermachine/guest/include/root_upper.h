/*
 * Where the root overlay's upper directory (what the guest changed in its root) stays reachable:
 * init keeps it open as UPPER_FD, close-on-exec so no process inherits it, and the agent opens it
 * as /proc/1/fd/UPPER_FD for LAYER (layer_tar.h). Nothing in the guest's root shows it.
 */
#ifndef ROOT_UPPER_H
#define ROOT_UPPER_H

#define UPPER_FD 100

#endif
