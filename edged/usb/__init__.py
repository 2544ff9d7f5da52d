"""USB sticks: which block devices are sticks, the filesystems edged accepts, mounting them."""
