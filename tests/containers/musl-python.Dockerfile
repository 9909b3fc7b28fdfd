# syntax=docker/dockerfile:1
# A base shaped like Plane's python:3.12.10-alpine, made offline from Debian's packages and
# sources (built by tests/containers/images.py; the test app goes on top with plane-app.Dockerfile):
# * CPython, bash and the libraries CPython needs (zlib, libffi, OpenSSL) built here against
#   musl with Debian's musl-gcc, from the upstream tarballs of Debian's source packages (the
#   `sources` build context); CPython in /usr/local, bash as /bin/bash, as in Plane's image;
# * musl's dynamic loader as /lib/ld-musl-<arch>.so.1 and no glibc library anywhere;
# * busybox as /bin/sh and every core utility, linked at the paths `busybox --list-full` names.
#   The busybox binary is Debian's busybox-static (a static binary: its libc is inside it).
# Not as in Plane's image: CPython is Debian's version (3.11 on bookworm, 3.12.10 in Plane's),
# musl is Debian's (1.2.3 on bookworm), and there is no apk.
ARG TOOLCHAIN_IMAGE=debian:bookworm
ARG BUSYBOX_IMAGE=debian:bookworm

# ---- sources: replaced with --build-context sources=DIR (the *.orig.tar.* files).
FROM scratch AS sources

FROM ${BUSYBOX_IMAGE} AS busybox

FROM ${TOOLCHAIN_IMAGE} AS build
SHELL ["/bin/bash", "-eu", "-o", "pipefail", "-c"]
COPY --from=sources / /src/
WORKDIR /build
# musl-gcc without gcc's Debian multiarch (CPython's configure and setup.py would add glibc's
# include and library paths), and the kernel's headers, which musl-gcc leaves out.
ENV CC=/build/musl-cc \
    DEPS=/build/deps
RUN printf '%s\n' '#!/bin/sh' 'case "$*" in *-print-multiarch*) exit 0 ;; esac' 'exec musl-gcc "$@"' > musl-cc \
 && chmod 755 musl-cc \
 && mkdir -p "$DEPS/include" /out/lib \
 && ln -s /usr/include/linux /usr/include/asm-generic "/usr/include/$(gcc -print-multiarch)/asm" "$DEPS/include/"
WORKDIR /build/zlib
RUN tar -xf /src/zlib_*.orig.tar.* --strip-components=1 \
 && CFLAGS="-O2 -fPIC" ./configure --prefix="$DEPS" --static \
 && make -j"$(nproc)" \
 && make install
WORKDIR /build/libffi
RUN tar -xf /src/libffi_*.orig.tar.* --strip-components=1 \
 && CPPFLAGS="-I$DEPS/include" CFLAGS="-O2 -fPIC" ./configure --prefix="$DEPS" --disable-shared --enable-static --disable-docs \
 && make -j"$(nproc)" \
 && make install
WORKDIR /build/openssl
RUN tar -xf /src/openssl_*.orig.tar.gz --strip-components=1 \
 && ./Configure "linux-$(uname -m)" no-shared no-tests no-engine no-module no-legacy no-dso no-async -fPIC \
        "-I$DEPS/include" --prefix="$DEPS" --libdir=lib \
 && make -j"$(nproc)" build_libs \
 && make install_dev
WORKDIR /build/python
RUN tar -xf /src/python3.*_*.orig.tar.* --strip-components=1 \
 && CPPFLAGS="-I$DEPS/include" LDFLAGS="-L$DEPS/lib" PKG_CONFIG_LIBDIR="$DEPS/lib/pkgconfig" \
    ./configure --prefix=/usr/local --with-openssl="$DEPS" --without-ensurepip --disable-test-modules \
 && make -j"$(nproc)" \
 && make install DESTDIR=/out \
 && ln -s python3 /out/usr/local/bin/python \
 && rm -f /out/usr/local/lib/python3.*/config-*/libpython3.*.a
WORKDIR /build/bash
RUN tar -xf /src/bash_*.orig.tar.* --strip-components=1 \
 && CPPFLAGS="-I$DEPS/include" ./configure --prefix=/usr --bindir=/bin --without-bash-malloc --disable-nls --without-curses \
 && make -j"$(nproc)" \
 && install -D -m 755 bash /out/bin/bash
WORKDIR /build
RUN loader="ld-musl-$(uname -m).so.1" \
 && cp "/usr/lib/$(uname -m)-linux-musl/libc.so" "/out/lib/$loader" \
 && ln -s "$loader" "/out/lib/libc.musl-$(uname -m).so.1" \
 && strip --strip-unneeded "$(readlink -f /out/usr/local/bin/python3)" /out/bin/bash \
 && find /out/usr/local/lib -name '*.so' -exec strip --strip-unneeded {} +

FROM scratch
COPY --from=busybox /bin/busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-euc", "busybox mkdir -p /sbin /usr/bin /usr/sbin /tmp /var/tmp /etc /root && busybox --install -s && busybox rm -f /linuxrc /usr/bin/dpkg /usr/bin/dpkg-deb /bin/rpm /usr/bin/rpm2cpio && busybox chmod 1777 /tmp /var/tmp && printf '%s\\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/:/sbin/nologin' > /etc/passwd && printf '%s\\n' 'root:x:0:' 'nobody:x:65534:' > /etc/group"]
COPY --from=build /out/ /
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
RUN python3 -c "import ctypes, ssl, zlib, _socket, select, pyexpat, _decimal, sys; assert sys.implementation._multiarch.endswith('musl')" \
 && bash -c 'test -n "$BASH_VERSION"' \
 && [ "$(readlink -f /bin/sh)" = /bin/busybox ] \
 && [ -z "$(find / -xdev -name 'libc.so.6' 2>/dev/null)" ]
CMD ["python3"]
