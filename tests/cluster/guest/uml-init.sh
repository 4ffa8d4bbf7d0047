#!/bin/sh
# First PID 1 of a User-Mode Linux guest whose root is the host's / over hostfs, read-only.
# Loads overlay, configfs and dlm from the extracted user-mode-linux package, puts a tmpfs overlay
# over the read-only root and pivots into it, then runs guest-init.sh.
# pivot_root, not chroot: programs that enter another mount namespace must land on the overlay,
# not on the read-only host root.
mount -t proc proc /proc
M=$(sed -n 's/.*cl\.umlmods=\([^ ]*\).*/\1/p' /proc/cmdline)
GI=$(sed -n 's/.*cl\.init=\([^ ]*\).*/\1/p' /proc/cmdline)
for m in kernel/fs/overlayfs/overlay.ko kernel/fs/configfs/configfs.ko kernel/fs/dlm/dlm.ko; do
  insmod "$M/$m" || echo "insmod $m failed"
done
mount -t tmpfs -o size=256m tmpfs /mnt
mkdir -p /mnt/upper /mnt/work /mnt/root
mount -t overlay -o lowerdir=/,upperdir=/mnt/upper,workdir=/mnt/work overlay /mnt/root || { echo "overlay failed"; exec /bin/sh; }
mount --move /dev /mnt/root/dev 2>/dev/null; mountpoint -q /mnt/root/dev || mount -t devtmpfs dev /mnt/root/dev
umount /proc
mkdir -p /mnt/root/.oldroot
cd /mnt/root || exec /bin/sh
pivot_root . .oldroot || { echo "pivot_root failed"; exec /bin/sh; }
exec "$GI"
