"""cffi API-mode builder for the KVM bindings (compiled at install time).

Only what the VMM uses is declared; structs are partial (``...;``) so the C
compiler, not this file, decides their layout from ``<linux/kvm.h>``. The
common API comes first, then what only the host's architecture has (x86_64's
register, CPUID and irqchip state; arm64's vCPU init, ONE_REG and device
attributes for the vGIC).
"""

import platform

from cffi import FFI

COMMON_CDEF = r"""
#define KVM_API_VERSION ...
#define KVM_CAP_IRQCHIP ...
#define KVM_CAP_USER_MEMORY ...
#define KVM_CAP_IMMEDIATE_EXIT ...
#define KVM_CAP_NR_VCPUS ...
#define KVM_CAP_MAX_VCPUS ...
#define KVM_CAP_IOEVENTFD ...
#define KVM_CAP_IRQFD ...
#define KVM_CAP_BINARY_STATS_FD ...

#define KVM_EXIT_UNKNOWN ...
#define KVM_EXIT_EXCEPTION ...
#define KVM_EXIT_IO ...
#define KVM_EXIT_HLT ...
#define KVM_EXIT_MMIO ...
#define KVM_EXIT_SHUTDOWN ...
#define KVM_EXIT_FAIL_ENTRY ...
#define KVM_EXIT_INTR ...
#define KVM_EXIT_INTERNAL_ERROR ...
#define KVM_EXIT_SYSTEM_EVENT ...
#define KVM_EXIT_IO_IN ...
#define KVM_EXIT_IO_OUT ...
#define KVM_INTERNAL_ERROR_EMULATION ...
#define KVM_SYSTEM_EVENT_SHUTDOWN ...
#define KVM_SYSTEM_EVENT_RESET ...
#define KVM_SYSTEM_EVENT_CRASH ...

/* Save/restore: each state is an opaque struct moved whole between KVM and a snapshot. */
#define KVM_GET_MP_STATE ...
#define KVM_SET_MP_STATE ...
#define KVM_MP_STATE_HALTED ...

struct kvm_mp_state { uint32_t mp_state; };
struct kvm_run {
    uint8_t request_interrupt_window;
    uint8_t immediate_exit;
    uint32_t exit_reason;
    ...;
};

/* Views of the kvm_run exit union (see set_source). */
struct amv_exit_io { uint8_t direction; uint8_t size; uint16_t port; uint32_t count; uint64_t data_offset; };
struct amv_exit_mmio { uint64_t phys_addr; uint8_t data[8]; uint32_t len; uint8_t is_write; };
struct amv_exit_internal { uint32_t suberror; uint32_t ndata; uint64_t data[16]; };
struct amv_exit_system_event { uint32_t type; uint32_t ndata; uint64_t data[16]; };
struct amv_exit_fail_entry { uint64_t hardware_entry_failure_reason; uint32_t cpu; };

int amv_get_api_version(int kvm);
int amv_check_extension(int fd, int cap);
int amv_create_vm(int kvm);
int amv_get_vcpu_mmap_size(int kvm);
int amv_set_user_memory_region(int vm, uint32_t slot, uint32_t flags,
                               uint64_t guest_phys_addr, uint64_t memory_size, uint64_t userspace_addr);
int amv_irq_line(int vm, uint32_t irq, uint32_t level);
int amv_ioeventfd(int vm, uint64_t addr, uint32_t len, int fd, uint64_t datamatch, int deassign);
int amv_irqfd(int vm, int fd, uint32_t gsi, int deassign);
int amv_create_vcpu(int vm, unsigned long id);
int amv_get_stats_fd(int fd);
int amv_run(int vcpu);
int amv_ioctl_struct(int fd, unsigned long request, void *arg);
void *amv_run_exit_data(struct kvm_run *run);

int amv_install_kick_handler(void);
unsigned long amv_thread_self(void);
int amv_kick(unsigned long thread);
"""

X86_64_CDEF = r"""
#define KVM_CAP_SET_TSS_ADDR ...
#define KVM_CAP_EXT_CPUID ...
#define KVM_CAP_PIT2 ...
#define KVM_CAP_SET_IDENTITY_MAP_ADDR ...
#define KVM_PIT_SPEAKER_DUMMY ...

#define KVM_GET_REGS ...
#define KVM_SET_REGS ...
#define KVM_GET_SREGS ...
#define KVM_SET_SREGS ...
#define KVM_GET_FPU ...
#define KVM_SET_FPU ...
#define KVM_GET_XSAVE ...
#define KVM_SET_XSAVE ...
#define KVM_GET_XCRS ...
#define KVM_SET_XCRS ...
#define KVM_GET_LAPIC ...
#define KVM_SET_LAPIC ...
#define KVM_GET_VCPU_EVENTS ...
#define KVM_SET_VCPU_EVENTS ...
#define KVM_GET_DEBUGREGS ...
#define KVM_SET_DEBUGREGS ...
#define KVM_GET_IRQCHIP ...
#define KVM_SET_IRQCHIP ...
#define KVM_GET_PIT2 ...
#define KVM_SET_PIT2 ...
#define KVM_GET_CLOCK ...
#define KVM_SET_CLOCK ...
#define KVM_IRQCHIP_PIC_MASTER ...
#define KVM_IRQCHIP_PIC_SLAVE ...
#define KVM_IRQCHIP_IOAPIC ...
#define KVM_GET_TSC_KHZ ...

struct kvm_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
};
struct kvm_segment {
    uint64_t base; uint32_t limit; uint16_t selector;
    uint8_t type, present, dpl, db, s, l, g, avl, unusable;
    ...;
};
struct kvm_dtable { uint64_t base; uint16_t limit; ...; };
struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
    struct kvm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
    ...;
};
struct kvm_fpu { uint16_t fcw; uint32_t mxcsr; ...; };
struct kvm_lapic_state { char regs[1024]; };
struct kvm_cpuid_entry2 {
    uint32_t function, index, flags, eax, ebx, ecx, edx;
    ...;
};
struct kvm_cpuid2 { uint32_t nent; struct kvm_cpuid_entry2 entries[]; ...; };
struct kvm_msr_entry { uint32_t index; uint64_t data; ...; };
struct kvm_msrs { uint32_t nmsrs; struct kvm_msr_entry entries[]; ...; };
struct kvm_msr_list { uint32_t nmsrs; uint32_t indices[]; ...; };
struct kvm_xsave { ...; };
struct kvm_xcrs { ...; };
struct kvm_vcpu_events { ...; };
struct kvm_debugregs { ...; };
struct kvm_irqchip { uint32_t chip_id; ...; };
struct kvm_pit_state2 { ...; };
struct kvm_clock_data { uint64_t clock; uint32_t flags; ...; };

int amv_get_supported_cpuid(int kvm, struct kvm_cpuid2 *cpuid);
int amv_set_tss_addr(int vm, uint64_t addr);
int amv_set_identity_map_addr(int vm, uint64_t addr);
int amv_create_irqchip(int vm);
int amv_create_pit2(int vm, uint32_t flags);
int amv_get_regs(int vcpu, struct kvm_regs *regs);
int amv_set_regs(int vcpu, struct kvm_regs *regs);
int amv_get_sregs(int vcpu, struct kvm_sregs *sregs);
int amv_set_sregs(int vcpu, struct kvm_sregs *sregs);
int amv_set_fpu(int vcpu, struct kvm_fpu *fpu);
int amv_set_msrs(int vcpu, struct kvm_msrs *msrs);
int amv_get_msrs(int vcpu, struct kvm_msrs *msrs);
int amv_get_msr_index_list(int kvm, struct kvm_msr_list *list);
int amv_set_cpuid2(int vcpu, struct kvm_cpuid2 *cpuid);
int amv_get_lapic(int vcpu, struct kvm_lapic_state *lapic);
int amv_set_lapic(int vcpu, struct kvm_lapic_state *lapic);
int amv_translate(int vcpu, uint64_t linear, uint64_t *physical);
"""

AARCH64_CDEF = r"""
#define KVM_CAP_ONE_REG ...
#define KVM_CAP_DEVICE_CTRL ...
#define KVM_CAP_ARM_PSCI_0_2 ...
#define KVM_ARM_VCPU_POWER_OFF ...
#define KVM_ARM_VCPU_PSCI_0_2 ...
#define KVM_DEV_TYPE_ARM_VGIC_V2 ...
#define KVM_DEV_TYPE_ARM_VGIC_V3 ...
#define KVM_DEV_ARM_VGIC_GRP_ADDR ...
#define KVM_DEV_ARM_VGIC_GRP_NR_IRQS ...
#define KVM_DEV_ARM_VGIC_GRP_CTRL ...
#define KVM_DEV_ARM_VGIC_CTRL_INIT ...
#define KVM_VGIC_V2_ADDR_TYPE_DIST ...
#define KVM_VGIC_V2_ADDR_TYPE_CPU ...
#define KVM_VGIC_V3_ADDR_TYPE_DIST ...
#define KVM_VGIC_V3_ADDR_TYPE_REDIST ...
#define KVM_ARM_IRQ_TYPE_SHIFT ...
#define KVM_ARM_IRQ_TYPE_SPI ...
#define KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2 ...
#define KVM_MP_STATE_RUNNABLE ...
#define KVM_MP_STATE_STOPPED ...

struct kvm_vcpu_init { uint32_t target; uint32_t features[7]; };

int amv_arm_preferred_target(int vm, struct kvm_vcpu_init *init);
int amv_arm_vcpu_init(int vcpu, struct kvm_vcpu_init *init);
uint64_t amv_arm64_core_reg(unsigned int index);
uint64_t amv_arm64_counter_frequency(void);
int amv_get_one_reg(int vcpu, uint64_t id, void *value);
int amv_set_one_reg(int vcpu, uint64_t id, void *value);
int amv_get_reg_list(int vcpu, uint64_t *ids, uint64_t *count);
int amv_create_device(int vm, uint32_t type);
int amv_device_attr(int device, int set, uint32_t group, uint64_t attr, void *value);
"""


COMMON_SOURCE = r"""
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

/* Mirrors of the kvm_run exit union members; asserted against the kernel's. */
struct amv_exit_io { __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; };
struct amv_exit_mmio { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; };
struct amv_exit_internal { __u32 suberror; __u32 ndata; __u64 data[16]; };
struct amv_exit_system_event { __u32 type; __u32 ndata; __u64 data[16]; };
struct amv_exit_fail_entry { __u64 hardware_entry_failure_reason; __u32 cpu; };
_Static_assert(sizeof(struct amv_exit_io) == sizeof(((struct kvm_run *)0)->io), "io");
_Static_assert(sizeof(struct amv_exit_mmio) == sizeof(((struct kvm_run *)0)->mmio), "mmio");
_Static_assert(offsetof(struct kvm_run, io) == offsetof(struct kvm_run, mmio), "union");

/* Every wrapper returns the ioctl's result, or -errno on failure. */
static int amv_ioctl(int fd, unsigned long request, unsigned long arg) {
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}
#define PTR(p) ((unsigned long)(p))

int amv_get_api_version(int kvm) { return amv_ioctl(kvm, KVM_GET_API_VERSION, 0); }
int amv_check_extension(int fd, int cap) { return amv_ioctl(fd, KVM_CHECK_EXTENSION, cap); }
int amv_create_vm(int kvm) { return amv_ioctl(kvm, KVM_CREATE_VM, 0); }
int amv_get_vcpu_mmap_size(int kvm) { return amv_ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0); }
int amv_set_user_memory_region(int vm, __u32 slot, __u32 flags, __u64 gpa, __u64 size, __u64 hva) {
    struct kvm_userspace_memory_region r = {
        .slot = slot, .flags = flags, .guest_phys_addr = gpa,
        .memory_size = size, .userspace_addr = hva,
    };
    return amv_ioctl(vm, KVM_SET_USER_MEMORY_REGION, PTR(&r));
}
int amv_irq_line(int vm, __u32 irq, __u32 level) {
    struct kvm_irq_level l = { .irq = irq, .level = level };
    return amv_ioctl(vm, KVM_IRQ_LINE, PTR(&l));
}
/* An MMIO write of `len` bytes equal to `datamatch` at `addr` signals `fd` inside KVM. */
int amv_ioeventfd(int vm, __u64 addr, __u32 len, int fd, __u64 datamatch, int deassign) {
    struct kvm_ioeventfd e;
    memset(&e, 0, sizeof e);
    e.addr = addr;
    e.len = len;
    e.fd = fd;
    e.datamatch = datamatch;
    e.flags = KVM_IOEVENTFD_FLAG_DATAMATCH | (deassign ? KVM_IOEVENTFD_FLAG_DEASSIGN : 0);
    return amv_ioctl(vm, KVM_IOEVENTFD, PTR(&e));
}
/* A write to `fd` raises interrupt line `gsi` inside KVM. */
int amv_irqfd(int vm, int fd, __u32 gsi, int deassign) {
    struct kvm_irqfd i;
    memset(&i, 0, sizeof i);
    i.fd = fd;
    i.gsi = gsi;
    i.flags = deassign ? KVM_IRQFD_FLAG_DEASSIGN : 0;
    return amv_ioctl(vm, KVM_IRQFD, PTR(&i));
}
int amv_create_vcpu(int vm, unsigned long id) { return amv_ioctl(vm, KVM_CREATE_VCPU, id); }
/* KVM_GET_STATS_FD (Linux 5.14): a read-only fd of the VM's or vCPU's binary statistics. */
int amv_get_stats_fd(int fd) { return amv_ioctl(fd, KVM_GET_STATS_FD, 0); }
/* KVM_RUN is called through cffi, which releases the GIL for the call. */
int amv_run(int vcpu) { return amv_ioctl(vcpu, KVM_RUN, 0); }
/* Any ioctl whose argument is a pointer to a struct (the get/set state family). */
int amv_ioctl_struct(int fd, unsigned long request, void *arg) { return amv_ioctl(fd, request, PTR(arg)); }
void *amv_run_exit_data(struct kvm_run *run) { return &run->io; }

/* The vCPU kick: a do-nothing handler installed without SA_RESTART, so a
   pthread_kill interrupts KVM_RUN with EINTR; kvm_run.immediate_exit covers a
   kick that lands before the thread enters KVM_RUN. */
static void amv_kick_handler(int sig) { (void)sig; }
static int amv_kick_signal;

int amv_install_kick_handler(void) {
    if (amv_kick_signal) return amv_kick_signal;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = amv_kick_handler;
    sigemptyset(&sa.sa_mask);
    int sig = SIGRTMIN + 4;
    if (sigaction(sig, &sa, NULL) < 0) return -errno;
    amv_kick_signal = sig;
    return sig;
}
unsigned long amv_thread_self(void) { return (unsigned long)pthread_self(); }
int amv_kick(unsigned long thread) { return -pthread_kill((pthread_t)thread, amv_kick_signal); }
"""

X86_64_SOURCE = r"""
int amv_get_supported_cpuid(int kvm, struct kvm_cpuid2 *c) { return amv_ioctl(kvm, KVM_GET_SUPPORTED_CPUID, PTR(c)); }
int amv_set_tss_addr(int vm, __u64 addr) { return amv_ioctl(vm, KVM_SET_TSS_ADDR, addr); }
int amv_set_identity_map_addr(int vm, __u64 addr) { return amv_ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, PTR(&addr)); }
int amv_create_irqchip(int vm) { return amv_ioctl(vm, KVM_CREATE_IRQCHIP, 0); }
int amv_create_pit2(int vm, __u32 flags) {
    struct kvm_pit_config c;
    memset(&c, 0, sizeof c);
    c.flags = flags;
    return amv_ioctl(vm, KVM_CREATE_PIT2, PTR(&c));
}
int amv_get_regs(int vcpu, struct kvm_regs *r) { return amv_ioctl(vcpu, KVM_GET_REGS, PTR(r)); }
int amv_set_regs(int vcpu, struct kvm_regs *r) { return amv_ioctl(vcpu, KVM_SET_REGS, PTR(r)); }
int amv_get_sregs(int vcpu, struct kvm_sregs *s) { return amv_ioctl(vcpu, KVM_GET_SREGS, PTR(s)); }
int amv_set_sregs(int vcpu, struct kvm_sregs *s) { return amv_ioctl(vcpu, KVM_SET_SREGS, PTR(s)); }
int amv_set_fpu(int vcpu, struct kvm_fpu *f) { return amv_ioctl(vcpu, KVM_SET_FPU, PTR(f)); }
int amv_set_msrs(int vcpu, struct kvm_msrs *m) { return amv_ioctl(vcpu, KVM_SET_MSRS, PTR(m)); }
int amv_get_msrs(int vcpu, struct kvm_msrs *m) { return amv_ioctl(vcpu, KVM_GET_MSRS, PTR(m)); }
int amv_get_msr_index_list(int kvm, struct kvm_msr_list *l) { return amv_ioctl(kvm, KVM_GET_MSR_INDEX_LIST, PTR(l)); }
int amv_set_cpuid2(int vcpu, struct kvm_cpuid2 *c) { return amv_ioctl(vcpu, KVM_SET_CPUID2, PTR(c)); }
int amv_get_lapic(int vcpu, struct kvm_lapic_state *l) { return amv_ioctl(vcpu, KVM_GET_LAPIC, PTR(l)); }
int amv_set_lapic(int vcpu, struct kvm_lapic_state *l) { return amv_ioctl(vcpu, KVM_SET_LAPIC, PTR(l)); }
int amv_translate(int vcpu, __u64 linear, __u64 *physical) {
    struct kvm_translation t;
    memset(&t, 0, sizeof t);
    t.linear_address = linear;
    int r = amv_ioctl(vcpu, KVM_TRANSLATE, PTR(&t));
    if (r < 0) return r;
    if (!t.valid) return -EFAULT;
    *physical = t.physical_address;
    return 0;
}
"""


AARCH64_SOURCE = r"""
/* The vCPU's type and features (PSCI 0.2+; POWER_OFF for a secondary vCPU, which PSCI CPU_ON starts). */
int amv_arm_preferred_target(int vm, struct kvm_vcpu_init *i) { return amv_ioctl(vm, KVM_ARM_PREFERRED_TARGET, PTR(i)); }
int amv_arm_vcpu_init(int vcpu, struct kvm_vcpu_init *i) { return amv_ioctl(vcpu, KVM_ARM_VCPU_INIT, PTR(i)); }
/* The ONE_REG id of core register `index`: x0-x30 (0-30), sp (31), pc (32), pstate (33). */
__u64 amv_arm64_core_reg(unsigned int index) {
    __u64 offset;
    if (index <= 30) offset = KVM_REG_ARM_CORE_REG(regs.regs[index]);
    else if (index == 31) offset = KVM_REG_ARM_CORE_REG(regs.sp);
    else if (index == 32) offset = KVM_REG_ARM_CORE_REG(regs.pc);
    else offset = KVM_REG_ARM_CORE_REG(regs.pstate);
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | offset;
}
/* The generic timer's frequency (CNTFRQ_EL0, which EL0 may read): a guest's counter ticks at its host's. */
uint64_t amv_arm64_counter_frequency(void) {
    uint64_t frequency;
    __asm__ volatile("mrs %0, cntfrq_el0" : "=r"(frequency));
    return frequency;
}
/* `value` holds the register's bytes: its size is encoded in `id` (KVM_REG_SIZE_MASK). */
int amv_get_one_reg(int vcpu, __u64 id, void *value) {
    struct kvm_one_reg r = { .id = id, .addr = PTR(value) };
    return amv_ioctl(vcpu, KVM_GET_ONE_REG, PTR(&r));
}
int amv_set_one_reg(int vcpu, __u64 id, void *value) {
    struct kvm_one_reg r = { .id = id, .addr = PTR(value) };
    return amv_ioctl(vcpu, KVM_SET_ONE_REG, PTR(&r));
}
/* Every register KVM saves for the vCPU: up to *count ids into `ids`; *count becomes how many there are
   (-E2BIG if that is more than fitted). */
int amv_get_reg_list(int vcpu, __u64 *ids, __u64 *count) {
    struct kvm_reg_list *list = calloc(1, sizeof *list + *count * sizeof(__u64));
    if (!list) return -ENOMEM;
    list->n = *count;
    int r = amv_ioctl(vcpu, KVM_GET_REG_LIST, PTR(list));
    if (r >= 0) memcpy(ids, list->reg, list->n * sizeof(__u64));
    *count = list->n;
    free(list);
    return r;
}
/* KVM_CREATE_DEVICE: the new device's fd (the in-kernel vGIC). */
int amv_create_device(int vm, __u32 type) {
    struct kvm_create_device d = { .type = type };
    int r = amv_ioctl(vm, KVM_CREATE_DEVICE, PTR(&d));
    return r < 0 ? r : (int)d.fd;
}
/* KVM_SET_DEVICE_ATTR (`set`) or KVM_GET_DEVICE_ATTR of a device fd; `value` as the attribute wants it. */
int amv_device_attr(int device, int set, __u32 group, __u64 attr, void *value) {
    struct kvm_device_attr a = { .group = group, .attr = attr, .addr = PTR(value) };
    return amv_ioctl(device, set ? KVM_SET_DEVICE_ATTR : KVM_GET_DEVICE_ATTR, PTR(&a));
}
"""

# What each host architecture's KVM offers besides the common API (``uname -m``'s names).
ARCH_PARTS = {"x86_64": (X86_64_CDEF, X86_64_SOURCE), "aarch64": (AARCH64_CDEF, AARCH64_SOURCE)}
arch_cdef, arch_source = ARCH_PARTS[platform.machine()]

ffibuilder = FFI()
ffibuilder.cdef(COMMON_CDEF + arch_cdef)
ffibuilder.set_source("asupermachine._core.kvm._kvm_cffi", COMMON_SOURCE + arch_source)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
