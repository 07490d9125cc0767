# ferrite — see README.md. Every target that needs the toolchain runs `make setup` first.
SHELL := /bin/bash
export PATH := /usr/lib/llvm-22/bin:$(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
include cross/env.mk

X86_MUSL := x86_64-unknown-linux-musl
ARM_MUSL := aarch64-unknown-linux-musl

.PHONY: setup build static cross package test test-unit test-privileged test-kernels lint fmt demo bench sizes clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release

static: setup
	$(MUSL_ENV) $(CARGO) build --release --target $(X86_MUSL) -p ferrite

cross: static
	$(MUSL_ENV) $(CARGO) build --release --target $(ARM_MUSL) -p ferrite

# deb + rpm (amd64, arm64), the multi-arch OCI image and the airgap tarballs → target/package/.
package: cross
	scripts/package.sh target/package
	@$(MAKE) --no-print-directory sizes

sizes:
	@for f in target/$(X86_MUSL)/release/ferrite target/$(ARM_MUSL)/release/ferrite; do \
		[ -f $$f ] && printf '%-50s %8d bytes (%s)\n' $$f $$(stat -c %s $$f) "$$(file -b $$f | cut -d, -f1-2)"; \
	done; true
	@for f in target/package/*.deb target/package/*.rpm target/package/*.tar.zst; do \
		[ -f $$f ] && printf '%-50s %8d bytes\n' $$f $$(stat -c %s $$f); \
	done; true

# Unit tests, the privileged netns/cgroup tests (run as root), and the static + arm64 builds
# (tests/static_binaries.rs runs the arm64 binary under qemu-aarch64-static).
# The kernel VMs run afterwards, one at a time (test-kernels), not in parallel with the rest.
test: setup cross
	$(CARGO) build
	$(CARGO) test --no-fail-fast -- --test-threads=2 --skip vm_debian12_
	@$(MAKE) --no-print-directory test-kernels
	@$(MAKE) --no-print-directory sizes

# ferrite on Debian 12's 6.1 kernels (x86_64 and arm64) and Debian's 6.12 (x86_64, netkit) in qemu VMs (tests/kernel_vm.rs): the
# kernels come from Debian's packages (scripts/fetch-kernels.sh, run by setup), the binaries
# from `make cross`.
test-kernels: setup cross
	$(CARGO) test --test kernel_vm -- --test-threads=1

test-unit: setup
	$(CARGO) test --lib --bins

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

demo: setup build
	scripts/demo.sh target/release/ferrite target/release/ferrite-lab

bench: setup build package
	target/release/ferrite-lab bench --out target/bench --ferrite target/release/ferrite

clean:
	$(CARGO) clean
