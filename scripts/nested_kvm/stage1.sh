#!/bin/busybox sh
# The L1's first init, in its initramfs: load the modules, mount the host's root read-only
# under a tmpfs overlay, and switch into it to run stage2.py with the host's own Python.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /io /lower /layer /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "nested-kvm stage 1: $*"; }
give_up() {
    say "$*"
    [ -d /io/request ] && echo "$*" > /io/failure
    echo o > /proc/sysrq-trigger
    sleep 5
}

for module in /modules/*.ko; do
    insmod "$module" 2>/dev/null || say "insmod ${module##*/} failed"
done
mount_9p() { mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,$2" "$1" "$3"; }
mount_9p nestedio rw /io || give_up "cannot mount the run's directory from the host"
[ -c /dev/kvm ] || give_up "$(cat /no-kvm-hint); the L1 kernel said: $(dmesg | grep -i -E 'kvm|svm' | tail -3)"
mount_9p hostroot ro,cache=loose /lower || give_up "cannot mount the host's root"
mount -t tmpfs -o mode=0755 layer /layer
mkdir -p /layer/upper /layer/work
mount -t overlay -o lowerdir=/lower,upperdir=/layer/upper,workdir=/layer/work overlay /newroot \
    || give_up "cannot lay a tmpfs over the host's root"
mkdir -p /newroot/nested-io
mount --move /io /newroot/nested-io
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /usr/bin/python3 /nested-io/request/stage2.py
