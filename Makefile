# The README's two commands: `make demo` and `make test`.
# Both build a private virtualenv in .venv first (nothing is installed system-wide
# except, on a bare Debian 12, the few Debian packages needed to build one).
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed
# apt's output goes here; the terminal gets one line per step (and the log's tail on failure).
SETUP_LOG := $(CURDIR)/.setup.log
# Caches of what runs from the checkout (pip's, python-escpos's printer database) stay in it.
export XDG_CACHE_HOME := $(CURDIR)/$(VENV)/.cache
# evdev and xkbcommon compile C extensions: venv/ensurepip, Python.h, a compiler and
# libxkbcommon's header; scanners need the keyboard layouts (xkb-data).
DEBIAN_BUILD_DEPS := python3-venv python3-dev gcc libxkbcommon-dev xkb-data
# `make demo` starts a Mosquitto on loopback for its step "online to head office".
DEMO_DEPS := mosquitto
# `make test`: duktape's `duk` runs the package's polkit rule (the engine Debian 12's polkitd uses);
# mosquitto is the MQTT broker the relay tests start on loopback (tests/brokers.py); postgresql the
# server the archive's tests start on a unix socket (edged/fleet/localpg.py; its libpq5 is psycopg's).
TEST_DEPS := duktape mosquitto postgresql
# The USB stick tests (root only) partition loop devices, mount exfat through FUSE, and run
# udevd + udisksd for the udisks2 mounter (the tests start and stop them; pgrep finds them).
STICK_TEST_DEPS := fdisk exfatprogs exfat-fuse udisks2 procps

# The Debian package, built in a clean Debian 12 root (tests/package/build.py) from a copy of the
# checkout in PKG_DIR (the .deb lands there), then checked with lintian. PKG_VERSION (optional)
# builds it as that version, e.g. to test upgrades. This machine needs only these:
PKG_DIR ?= /tmp/edged-package
PKG_VERSION ?=
# (python3-pip downloads the libraries debian/vendor.txt pins, for the offline build.)
PACKAGE_TOOLS := debootstrap systemd-container lintian git python3-pip
# `make test-package` boots a debootstrapped Debian 12 with systemd-nspawn and installs the .deb.
PACKAGE_TEST_DEPS := systemd-container debootstrap

# $(call apt_install,WHAT,PACKAGES[,root]): install the PACKAGES not yet installed, quietly.
# Root installs; others go through sudo (when it can ask for a password, or needs none), or are
# told the exact line to run as root. With a
# third argument, only root installs (a non-root run goes on; the tests that need them say so).
define apt_install
@missing=$$(for p in $(2); do dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done | xargs); \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif [ -n "$(3)" ]; then echo "edged: not root: $(1) cannot be installed ($$missing); tests needing them are skipped" >&2; exit 0; \
	elif command -v sudo >/dev/null && { [ -t 0 ] || sudo -n true 2>/dev/null; }; then sudo="sudo"; \
	else echo "edged: $(1) need these Debian packages. As root, run:" >&2; \
	     echo "  apt-get update && apt-get install -y $$missing" >&2; exit 1; fi; \
	echo "edged: installing $(1) (first run only, ~1 min): $$missing"; \
	echo "== $$(date '+%F %T') apt-get install $$missing" >> "$(SETUP_LOG)"; \
	apt="env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300"; \
	{ $$sudo $$apt install $$missing || { $$sudo $$apt update && $$sudo $$apt install $$missing; }; \
	} >> "$(SETUP_LOG)" 2>&1 || { tail -n 15 "$(SETUP_LOG)" >&2; \
	  echo "edged: installing $$missing failed (whole log: $(SETUP_LOG))" >&2; exit 1; }
endef

.PHONY: demo test lint run clean package bundle test-package test-till test-fresh

demo: $(STAMP)
	$(call apt_install,the demo's MQTT broker,$(DEMO_DEPS))
	$(VENV)/bin/edged demo

test: $(STAMP)
	$(call apt_install,the test tools,$(TEST_DEPS))
	$(call apt_install,the USB stick test tools,$(STICK_TEST_DEPS),root)
	@# Every temporary file of the run in one directory, removed after it: /tmp is left as found.
	@t=$$(mktemp -d /tmp/edged-test.XXXXXX) && trap 'rm -rf "$$t"' EXIT && trap 'exit 130' INT TERM HUP && \
	  TMPDIR=$$t $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# ruff (style, imports, likely bugs) and mypy (types); settings in pyproject.toml. CI runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff check edged tests
	$(VENV)/bin/mypy

# The simulated till left running in the foreground (Ctrl+C stops it).
run: $(STAMP)
	$(VENV)/bin/edged run --simulate --state-dir $(VENV)/state --socket $(VENV)/edged.sock

$(STAMP): pyproject.toml
	$(call apt_install,the build tools for C extensions in the virtualenv,$(DEBIAN_BUILD_DEPS))
	@echo "edged: setting up $(VENV) (first run only, ~1 min)"
	@$(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,headoffice]' >> "$(SETUP_LOG)" 2>&1 || \
	  { tail -n 15 "$(SETUP_LOG)" >&2; echo "edged: pip install failed (whole log: $(SETUP_LOG))" >&2; exit 1; }
	@touch $@

package:
	@[ "$$(id -u)" = 0 ] || { echo "edged: make package needs root (debootstrap and systemd-nspawn make the clean build root)" >&2; exit 1; }
	$(call apt_install,the package build tools,$(PACKAGE_TOOLS))
	rm -rf $(PKG_DIR)/src $(PKG_DIR)/edged_* $(PKG_DIR)/edged-headoffice_* && mkdir -p $(PKG_DIR)/src
	@# What git tracks or would track (a checkout, not .venv or caches), symlinks kept; the
	@# checkout may belong to another user than root (sudo make package).
	git -c safe.directory='*' ls-files -co --exclude-standard > $(PKG_DIR)/files
	while read -r f; do [ -e "$$f" ] && echo "$$f"; done < $(PKG_DIR)/files | tar -cf - -T - | tar -xf - -C $(PKG_DIR)/src
	@[ -f $(PKG_DIR)/src/debian/control ] || { echo "edged: copying the checkout to $(PKG_DIR)/src failed" >&2; exit 1; }
	@if [ -n "$(PKG_VERSION)" ]; then cd $(PKG_DIR)/src && { \
	  printf 'edged ($(PKG_VERSION)) bookworm; urgency=medium\n\n  * Rebuilt as $(PKG_VERSION).\n\n -- %s  %s\n\n' \
	    "$$(sed -n 's/^Maintainer: //p' debian/control)" "$$(date -R)"; cat debian/changelog; } > debian/changelog.new \
	  && mv debian/changelog.new debian/changelog; fi
	@# Debian's own way: a clean Debian 12 with build-essential and the Build-Depends only.
	python3 tests/package/build.py $(PKG_DIR)
	lintian --fail-on error,warning --info $(PKG_DIR)/edged_*.deb $(PKG_DIR)/edged-headoffice_*.deb
	@ls $(PKG_DIR)/edged_*.deb $(PKG_DIR)/edged-headoffice_*.deb

# The .deb and the Debian packages a bare Debian 12 till (systemd, udev, udisks2) lacks for it,
# for a till with no network: copy PKG_DIR/bundle/ to a stick, `apt install ./bundle/*.deb`.
bundle: package
	python3 tests/package/rootfs.py bundle $$(ls $(PKG_DIR)/edged_*.deb) $(PKG_DIR)/bundle

test-package: $(STAMP)
	$(call apt_install,the package test tools,$(PACKAGE_TEST_DEPS) $(PACKAGE_TOOLS))
	@# -s: each check logs what it saw ([package] lines: lintian, exposure, timings, counts).
	$(VENV)/bin/python -m pytest --package tests/package -v -s -p no:cacheprovider

# `make test-till`: a Debian 12 guest under QEMU (software emulation) with the .deb installed under
# real systemd; USB printers, scanners, sticks and serial adapters plugged into it through the guest
# kernel's real USB stack (tests/till; root; the guest image is cached in /var/cache/edged-vm).
# TILL_DEB: test this .deb instead of building one (CI passes the one test-package built).
TILL_DIR ?= /var/tmp/edged-till
TILL_DEB ?=
TILL_TEST_DEPS := qemu-system-x86 mmdebstrap dosfstools mtools
test-till: $(STAMP)
	@[ "$$(id -u)" = 0 ] || { echo "edged: make test-till needs root (the guest image is built with mmdebstrap)" >&2; exit 1; }
	$(call apt_install,the till VM test tools,$(TILL_TEST_DEPS) $(PACKAGE_TOOLS))
	@deb="$(TILL_DEB)"; if [ -z "$$deb" ]; then \
	  $(MAKE) --no-print-directory package PKG_DIR=$(TILL_DIR)/package >/dev/null && deb=$$(ls $(TILL_DIR)/package/edged_*.deb); fi; \
	  EDGED_DEB=$$deb TILL_DIR=$(TILL_DIR) $(VENV)/bin/python -m pytest --till tests/till -v -s -p no:cacheprovider

# A first-time user on a bare Debian 12 (minbase + make + git): the README's two commands and
# `make package` in a fresh clone of HEAD (root; ~10 minutes; logs in /var/tmp/edged-fresh).
test-fresh:
	python3 tests/package/fresh.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
