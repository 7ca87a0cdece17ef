//! The sandbox's seccomp filter and capability bounding set.
//!
//! # What is applied
//! - **Capabilities**: the bounding set is cut to Docker's (and BuildKit's) default set:
//!   CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP,
//!   NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE (`CapBnd: 00000000a80425fb`, as in a
//!   BuildKit RUN). A root process gets exactly these on exec; other users get none, as usual.
//! - **seccomp**: a deny-list (a syscall not listed is allowed), hand-written BPF with no C
//!   library. It refuses with `EPERM` what Docker's default profile refuses even to a process
//!   holding the capabilities above: creating or entering namespaces (`unshare`, `setns`,
//!   `clone` with namespace flags), every mount syscall (old and new API), the kernel keyring,
//!   `bpf`, `perf_event_open`, `userfaultfd`, io_uring, module loading, `kexec`, `reboot`,
//!   swap, `syslog`, `acct`, `quotactl`, `iopl`/`ioperm`, `open_by_handle_at`, setting the
//!   clock and a few obsolete calls. `clone3` gets `ENOSYS`, as in Docker's profile, so that
//!   libc falls back to `clone`, whose flags the filter can see. x32 calls are checked like
//!   the 64-bit ones; 32-bit x86 processes get the namespace, keyring, `bpf`, `userfaultfd`,
//!   `perf_event_open`, io_uring and new-mount-API entries of the list.
//! - **no_new_privs is not set**: BuildKit does not set it (a RUN sees `NoNewPrivs: 0`), and
//!   setting it would break `sudo`/`su` in steps that run as a non-root `USER`.
//!
//! Docker's profile is an allow-list of about 350 calls; a deny-list of the dangerous ones
//! gives the same protection for the calls listed, without breaking programs that use newer
//! calls the allow-list does not know yet.

use std::io;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// Namespace flags of `clone` (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID |
/// NEWNET), Docker's mask.
const CLONE_NAMESPACE_FLAGS: u32 = 0x7e02_0000;

/// Docker's default capabilities, as bit numbers.
pub const DEFAULT_CAPABILITIES: [u32; 14] = [
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// x86_64 syscalls refused with EPERM (x32 calls use the same numbers plus the x32 bit).
const DENY_X86_64: &[u32] = &[
    libc::SYS_unshare as u32,
    libc::SYS_setns as u32,
    libc::SYS_mount as u32,
    libc::SYS_umount2 as u32,
    libc::SYS_pivot_root as u32,
    libc::SYS_open_tree as u32,
    libc::SYS_move_mount as u32,
    libc::SYS_fsopen as u32,
    libc::SYS_fsconfig as u32,
    libc::SYS_fsmount as u32,
    libc::SYS_fspick as u32,
    libc::SYS_mount_setattr as u32,
    libc::SYS_keyctl as u32,
    libc::SYS_add_key as u32,
    libc::SYS_request_key as u32,
    libc::SYS_bpf as u32,
    libc::SYS_perf_event_open as u32,
    libc::SYS_userfaultfd as u32,
    libc::SYS_io_uring_setup as u32,
    libc::SYS_io_uring_enter as u32,
    libc::SYS_io_uring_register as u32,
    libc::SYS_kexec_load as u32,
    libc::SYS_kexec_file_load as u32,
    libc::SYS_init_module as u32,
    libc::SYS_finit_module as u32,
    libc::SYS_delete_module as u32,
    libc::SYS_reboot as u32,
    libc::SYS_swapon as u32,
    libc::SYS_swapoff as u32,
    libc::SYS_syslog as u32,
    libc::SYS_acct as u32,
    libc::SYS_lookup_dcookie as u32,
    libc::SYS_quotactl as u32,
    libc::SYS_iopl as u32,
    libc::SYS_ioperm as u32,
    libc::SYS_open_by_handle_at as u32,
    libc::SYS_clock_settime as u32,
    libc::SYS_settimeofday as u32,
    libc::SYS_vhangup as u32,
    libc::SYS_uselib as u32,
    libc::SYS_ustat as u32,
    libc::SYS_sysfs as u32,
    libc::SYS__sysctl as u32,
];

/// 32-bit x86 numbers of the most important entries (i386's table differs from x86_64's;
/// calls added since Linux 5.0 have the same number everywhere).
const DENY_I386: &[u32] = &[
    310, // unshare
    346, // setns
    286, // add_key
    287, // request_key
    288, // keyctl
    357, // bpf
    336, // perf_event_open
    374, // userfaultfd
    425, 426, 427, // io_uring_setup, io_uring_enter, io_uring_register
    428, 429, 430, 431, 432, 433, 442, // open_tree … fspick, mount_setattr
];
const I386_CLONE: u32 = 120;
const I386_CLONE3: u32 = 435;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

/// The filter of one architecture: `nr` is loaded; deny-listed numbers return EPERM, `clone`
/// with namespace flags EPERM, `clone3` ENOSYS, everything else is allowed.
fn arch_block(deny: &[u32], clone: u32, clone3: u32) -> Vec<libc::sock_filter> {
    let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let enosys = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let mut out = Vec::with_capacity(deny.len() * 2 + 10);
    for &nr in deny {
        out.push(jump(JEQ_K, nr, 0, 1));
        out.push(stmt(RET_K, eperm));
    }
    out.push(jump(JEQ_K, clone3, 0, 1));
    out.push(stmt(RET_K, enosys));
    out.push(jump(JEQ_K, clone, 0, 3));
    out.push(stmt(LD_W_ABS, ARG0_LOW));
    out.push(jump(JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1));
    out.push(stmt(RET_K, eperm));
    out.push(stmt(RET_K, SECCOMP_RET_ALLOW));
    out
}

/// The compiled filter (build it before forking; the child only installs it).
pub fn default_filter() -> Vec<libc::sock_filter> {
    let x86_64 = arch_block(DENY_X86_64, libc::SYS_clone as u32, libc::SYS_clone3 as u32);
    let i386 = arch_block(DENY_I386, I386_CLONE, I386_CLONE3);
    let mut prog = vec![stmt(LD_W_ABS, ARCH)];
    // arch == x86_64 → the x86_64 block (after the i386 check and the i386 block's skip).
    prog.push(jump(JEQ_K, AUDIT_ARCH_X86_64, 0, 1));
    let to_x86_64 = prog.len();
    prog.push(stmt((libc::BPF_JMP | libc::BPF_JA) as u16, 0)); // patched below
    prog.push(jump(JEQ_K, AUDIT_ARCH_I386, 1, 0));
    prog.push(stmt(RET_K, SECCOMP_RET_ALLOW));
    prog.push(stmt(LD_W_ABS, NR));
    prog.extend(i386);
    let x86_64_start = prog.len();
    prog[to_x86_64].k = (x86_64_start - to_x86_64 - 1) as u32;
    prog.push(stmt(LD_W_ABS, NR));
    // x32 calls: the same numbers with the x32 bit; strip it and check the same list.
    prog.push(jump(JGE_K, X32_SYSCALL_BIT, 0, 1));
    prog.push(stmt(AND_K, !X32_SYSCALL_BIT));
    prog.extend(x86_64);
    prog
}

/// Installs `filter` on the calling process. Needs CAP_SYS_ADMIN (no_new_privs is not set).
pub fn install(filter: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops every capability outside [`DEFAULT_CAPABILITIES`] from the bounding set.
pub fn limit_capabilities() -> io::Result<()> {
    for cap in 0..64u32 {
        if DEFAULT_CAPABILITIES.contains(&cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret != 0 {
            let e = io::Error::last_os_error();
            // Past the last capability this kernel knows.
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_stay_inside_the_program() {
        let prog = default_filter();
        assert!(prog.len() < 4096);
        for (i, ins) in prog.iter().enumerate() {
            let class = ins.code & 0x07;
            if class == libc::BPF_JMP as u16 {
                let far = if ins.code & 0xf0 == libc::BPF_JA as u16 {
                    ins.k as usize
                } else {
                    ins.jt.max(ins.jf) as usize
                };
                assert!(i + 1 + far < prog.len(), "instruction {i} jumps out");
            }
        }
        assert_eq!(prog.last().unwrap().k, SECCOMP_RET_ALLOW);
    }

    #[test]
    fn default_capabilities_are_dockers() {
        let mask: u64 = DEFAULT_CAPABILITIES.iter().map(|c| 1u64 << c).sum();
        assert_eq!(mask, 0xa804_25fb);
    }
}
