# The README's two commands: `make demo` and `make test`.
# Both build a private virtualenv in .venv first (nothing is installed system-wide
# except, on a bare Debian 12, the few packages needed to build one).
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed
DEBIAN_BUILD_DEPS := python3-venv python3-dev gcc libxkbcommon-dev xkb-data
# The USB stick tests (root only) partition loop devices, mount exfat through FUSE, and run
# udevd + udisksd for the udisks2 mounter (the tests start and stop them).
STICK_TEST_DEPS := fdisk exfatprogs exfat-fuse udisks2

# The Debian package: built from a copy of the checkout in PKG_DIR (the .deb lands there), then
# checked with lintian. PKG_VERSION (optional) builds it as that version, e.g. to test upgrades.
PKG_DIR ?= /tmp/edged-package
PKG_VERSION ?=
PACKAGE_BUILD_DEPS := dpkg-dev debhelper dh-python python3-all python3-cffi python3-dev python3-pip \
                      python3-setuptools libxkbcommon-dev help2man lintian \
                      python3-appdirs python3-pil python3-qrcode python3-six python3-yaml
# `make test-package` boots a debootstrapped Debian 12 with systemd-nspawn and installs the .deb.
PACKAGE_TEST_DEPS := systemd-container debootstrap

.PHONY: demo test run clean package bundle test-package

demo: $(STAMP)
	$(VENV)/bin/edged demo

test: $(STAMP)
	@if [ "$$(id -u)" = 0 ] && ! { command -v sfdisk && command -v mkfs.exfat && command -v mount.exfat-fuse && command -v udisksctl; } >/dev/null; then \
	  apt-get install -y -q $(STICK_TEST_DEPS) || { apt-get update -q && apt-get install -y -q $(STICK_TEST_DEPS); } || echo "edged: USB stick tests will be skipped: cannot install $(STICK_TEST_DEPS)" >&2; \
	fi
	$(VENV)/bin/python -m pytest

# The simulated till left running in the foreground (Ctrl+C stops it).
run: $(STAMP)
	$(VENV)/bin/edged run --simulate --state-dir $(VENV)/state --socket $(VENV)/edged.sock

$(STAMP): pyproject.toml
	@# evdev and xkbcommon compile C extensions: they need venv/ensurepip, Python.h, a compiler
	@# and libxkbcommon's header; scanners need the keyboard layouts (xkb-data).
	@if ! $(PYTHON) -c 'import ensurepip, sysconfig, os, shutil, sys; \
	    sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) \
	    and shutil.which("cc") and os.path.exists("/usr/include/xkbcommon/xkbcommon.h") \
	    and os.path.isdir("/usr/share/X11/xkb/symbols") else 1)' 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q $(DEBIAN_BUILD_DEPS); \
	  elif command -v sudo >/dev/null; then sudo apt-get update -q && sudo apt-get install -y -q $(DEBIAN_BUILD_DEPS); \
	  else echo "edged: please install: $(DEBIAN_BUILD_DEPS)" >&2; exit 1; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

package:
	@command -v dpkg-buildpackage >/dev/null && command -v lintian >/dev/null && dpkg-checkbuilddeps >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && { apt-get install -y -q $(PACKAGE_BUILD_DEPS) || { apt-get update -q && apt-get install -y -q $(PACKAGE_BUILD_DEPS); }; } ; } || \
	  { echo "edged: please install: $(PACKAGE_BUILD_DEPS)" >&2; exit 1; }
	rm -rf $(PKG_DIR)/src $(PKG_DIR)/edged_* && mkdir -p $(PKG_DIR)/src
	@# What git tracks or would track (a checkout, not .venv or caches), symlinks kept.
	git ls-files -co --exclude-standard | while read -r f; do [ -e "$$f" ] && echo "$$f"; done \
	  | tar -cf - -T - | tar -xf - -C $(PKG_DIR)/src
	@if [ -n "$(PKG_VERSION)" ]; then cd $(PKG_DIR)/src && { \
	  printf 'edged ($(PKG_VERSION)) bookworm; urgency=medium\n\n  * Rebuilt as $(PKG_VERSION).\n\n -- %s  %s\n\n' \
	    "$$(sed -n 's/^Maintainer: //p' debian/control)" "$$(date -R)"; cat debian/changelog; } > debian/changelog.new \
	  && mv debian/changelog.new debian/changelog; fi
	@# Debian's python3 (the one the package runs on), not one earlier on PATH.
	cd $(PKG_DIR)/src && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning --info $(PKG_DIR)/edged_*.deb
	@ls $(PKG_DIR)/edged_*.deb

# The .deb and the Debian packages a bare Debian 12 till (systemd, udev, udisks2) lacks for it,
# for a till with no network: copy PKG_DIR/bundle/ to a stick, `apt install ./bundle/*.deb`.
bundle: package
	@command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
	python3 tests/package/rootfs.py bundle $$(ls $(PKG_DIR)/edged_*.deb) $(PKG_DIR)/bundle

test-package: $(STAMP)
	@command -v systemd-nspawn >/dev/null && command -v debootstrap >/dev/null || \
	  { apt-get install -y -q $(PACKAGE_TEST_DEPS) || { apt-get update -q && apt-get install -y -q $(PACKAGE_TEST_DEPS); }; }
	@# -s: each check logs what it saw ([package] lines: lintian, exposure, timings, counts).
	$(VENV)/bin/python -m pytest --package tests/package -v -s -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
