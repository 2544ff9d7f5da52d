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

.PHONY: demo test run clean

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

clean:
	rm -rf $(VENV) build *.egg-info
