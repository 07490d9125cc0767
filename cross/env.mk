# Cross/static build settings (included by the Makefile).
# Both musl targets link with rust-lld; C dependencies (ring, later) compile with clang-22 for the
# musl target of each arch.
MUSL_ENV := \
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
	CC_x86_64_unknown_linux_musl=clang-22 \
	CFLAGS_x86_64_unknown_linux_musl=--target=x86_64-linux-musl \
	CC_aarch64_unknown_linux_musl=clang-22 \
	CFLAGS_aarch64_unknown_linux_musl=--target=aarch64-linux-musl \
	AR_aarch64_unknown_linux_musl=llvm-ar-22 \
	AR_x86_64_unknown_linux_musl=llvm-ar-22
