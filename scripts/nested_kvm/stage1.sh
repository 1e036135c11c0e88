#!/bin/busybox sh
# The L1's first init, in its initramfs: load the modules, mount the root the host shares read-only
# under a tmpfs overlay, and switch into the root to run stage2.py with the root's own Python.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /io /lower /repository /layer /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "nested-kvm stage 1: $*"; }
io=/io  # the run's directory, until it moves into the new root
give_up() {
    say "$*"
    [ -d $io/request ] && echo "$*" > $io/failure
    echo o > /proc/sysrq-trigger
    sleep 5
}

for module in /modules/*.ko; do
    insmod "$module" 2>/dev/null || say "insmod ${module##*/} failed"
done
mount_9p() { mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,$2" "$1" "$3"; }
# A tmpfs layer over the read-only $1, mounted at $2 (each layer named $3).
overlay() {
    mkdir -p "/layer/$3/upper" "/layer/$3/work"
    mount -t overlay -o "lowerdir=$1,upperdir=/layer/$3/upper,workdir=/layer/$3/work" overlay "$2"
}
mount_9p nestedio rw /io || give_up "cannot mount the run's directory from the host"
[ -c /dev/kvm ] || give_up "$(cat /no-kvm-hint); the L1 kernel said: $(dmesg | grep -i -E 'kvm|svm' | tail -3)"
. /io/request/stage1.conf  # REPOSITORY (a path or empty), from root.py
mount -t tmpfs -o mode=0755 layer /layer
mount_9p hostroot ro,cache=loose /lower || give_up "cannot mount the root from the host"
overlay /lower /newroot root || give_up "cannot lay a tmpfs over the root"
if [ -n "$REPOSITORY" ]; then
    mount_9p repository ro,cache=loose /repository && mkdir -p "/newroot$REPOSITORY" \
        && overlay /repository "/newroot$REPOSITORY" repository || give_up "cannot mount $REPOSITORY from the host"
fi
mkdir -p /newroot/nested-io
mount --move /io /newroot/nested-io && io=/newroot/nested-io
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /usr/bin/python3 /nested-io/request/stage2.py
