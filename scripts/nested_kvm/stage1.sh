#!/bin/busybox sh
# The L1's first init, in its initramfs: load the modules, mount the root the host shares read-only
# under a tmpfs overlay (or copy one to finish into a tmpfs), run debootstrap's second stage in a
# root its first stage made, and switch into the root to run stage2.py with the root's own Python.
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
. /io/request/stage1.conf  # ROOT_MODE (rw or overlay) and REPOSITORY (a path or empty), from root.py
mount -t tmpfs -o mode=0755 layer /layer
if [ "$ROOT_MODE" = finish ]; then  # the root to finish is in the initramfs, at /finish (root.py)
    mount_9p hostroot rw /lower && mount -t tmpfs -o mode=0755 root /newroot && cp -a /finish/. /newroot/ \
        && mkdir /newroot/nested-root && mount --move /lower /newroot/nested-root \
        || give_up "cannot copy the root to finish from the host"
else
    mount_9p hostroot ro,cache=loose /lower || give_up "cannot mount the root from the host"
    overlay /lower /newroot root || give_up "cannot lay a tmpfs over the root"
fi
if [ -n "$REPOSITORY" ]; then
    mount_9p repository ro,cache=loose /repository && mkdir -p "/newroot$REPOSITORY" \
        && overlay /repository "/newroot$REPOSITORY" repository || give_up "cannot mount $REPOSITORY from the host"
fi
mkdir -p /newroot/nested-io
mount --move /io /newroot/nested-io && io=/newroot/nested-io
mount --move /dev /newroot/dev
if [ -x /newroot/debootstrap/debootstrap ]; then  # debootstrap --foreign's first stage ran on the host
    say "debootstrap's second stage"
    chroot /newroot /debootstrap/debootstrap --second-stage >> $io/stderr 2>&1 \
        || give_up "debootstrap's second stage failed: $(tail -5 /newroot/debootstrap/debootstrap.log)"
fi
umount /proc /sys
exec switch_root /newroot /usr/bin/python3 /nested-io/request/stage2.py
