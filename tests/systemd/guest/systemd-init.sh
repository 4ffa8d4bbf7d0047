#!/bin/bash
# PID 1 of the systemd tier's guest after uml-init.sh pivoted into the overlay root: mounts the
# host exchange directory, writes a minimal unit set into the overlay's /etc (the host's / stays
# untouched), then hands PID 1 to systemd. Kernel command line: cl.hostfs_xchg=<dir>.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
umount -l /.oldroot 2>/dev/null
HXCHG=$(sed -n 's/.*cl\.hostfs_xchg=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /xchg && mount -t hostfs -o "$HXCHG" none /xchg || { echo "no /xchg"; exec /bin/sh; }
HERE=$(dirname "$0")
U=/etc/systemd/system
# The test target: journald and the command runner, nothing else. Units started later (the
# daemon's) still pull sysinit.target; what cannot work in this guest is masked below.
cat > $U/virtdlm-test.target <<EOT
[Unit]
Description=virt-dlm systemd test guest
Wants=systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service virtdlm-test-exec.service
AllowIsolate=yes
EOT
cat > $U/virtdlm-test-exec.service <<EOT
[Unit]
Description=Runs the scripts the host drops into /xchg/cmd
DefaultDependencies=no
After=systemd-journald.socket
[Service]
ExecStart=/bin/bash $HERE/exec-loop.sh
KillMode=process
EOT
ln -sf virtdlm-test.target $U/default.target
# The host's container marker would make systemd take this guest for a container; the guest is
# a machine of its own (User-Mode Linux), named as the operator's guide names its first host.
rm -f /.dockerenv /run/.containerenv
echo hv1 > /etc/hostname
# No udev, getty, fsck, remount, time sync, network or logind in this guest; nothing of the
# host's enabled units either (only what a test starts runs).
for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
  systemd-udev-trigger.service systemd-udev-settle.service systemd-remount-fs.service \
  systemd-fsck-root.service systemd-modules-load.service systemd-random-seed.service \
  systemd-timesyncd.service systemd-networkd.service systemd-resolved.service \
  systemd-logind.service getty@.service serial-getty@.service console-getty.service \
  systemd-journal-flush.service systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service \
  systemd-tmpfiles-clean.timer systemd-hwdb-update.service systemd-firstboot.service \
  systemd-machine-id-commit.service systemd-binfmt.service systemd-sysusers.service \
  systemd-update-utmp.service systemd-update-done.service systemd-journal-catalog-update.service \
  ldconfig.service kmod-static-nodes.service apparmor.service systemd-pstore.service \
  dev-hugepages.mount dev-mqueue.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
  sys-fs-fuse-connections.mount proc-sys-fs-binfmt_misc.automount \
  tmp.mount swap.target cryptsetup.target systemd-boot-system-token.service \
  systemd-repart.service systemd-growfs-root.service systemd-sysext.service; do
  ln -sf /dev/null "$U/$u"
done
# Debian's sbd package (the pacemaker tier installs it) makes corosync, dlm and pacemaker require
# sbd once enabled; this guest runs no sbd (its watchdog is UML's harddog, which needs a host
# helper): the host's enablement links are dropped from the overlay, so corosync starts alone.
rm -f $U/*.requires/sbd.service $U/*.requires/sbd_remote.service
# dlm.service loads the dlm module with modprobe; uml-init.sh loaded it already (the UML kernel's
# modules are not under /lib/modules). libdlm and dlm_controld open /dev/misc/<name>; no udev.
mkdir -p $U/dlm.service.d && printf '[Service]\nExecStartPre=\n' > $U/dlm.service.d/guest.conf
ln -s . /dev/misc
echo "$(cut -d' ' -f1 /proc/uptime) exec systemd" >> /xchg/status
umount /proc
exec /lib/systemd/systemd --unit=virtdlm-test.target
