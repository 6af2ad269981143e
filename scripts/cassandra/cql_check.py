#!/usr/bin/env python3
"""Minimal CQL native-protocol v4 probe (stdlib only, so CI needs no cqlsh/driver).

Proves a node really serves CQL: OPTIONS -> SUPPORTED, STARTUP -> READY (or
AUTHENTICATE + SASL PLAIN login), then a real query against system.local.

usage: cql_check.py HOST PORT [--user U --password P] [--expect-auth-required] [--peers N] [--quiet]
--peers N: also require system.peers to list at least N other nodes (cluster members).
exit 0 = OK, 1 = not (yet) OK, reason on stderr.
"""
import argparse
import socket
import struct
import sys

VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
OP_OPTIONS, OP_SUPPORTED, OP_QUERY, OP_RESULT = 0x05, 0x06, 0x07, 0x08
OP_AUTH_RESPONSE, OP_AUTH_SUCCESS = 0x0F, 0x10


class ProbeError(Exception):
    pass


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by server")
        buf += chunk
    return buf


def _request(sock, opcode, body=b"", stream=1):
    sock.sendall(struct.pack(">BBhBI", VERSION, 0, stream, opcode, len(body)) + body)
    version, _flags, _stream, op, length = struct.unpack(">BBhBI", _recv_exact(sock, 9))
    if version != (0x80 | VERSION):
        raise ProbeError("unexpected response version 0x%02x" % version)
    payload = _recv_exact(sock, length)
    if op == OP_ERROR:
        code = struct.unpack(">i", payload[:4])[0]
        (mlen,) = struct.unpack(">H", payload[4:6])
        raise ProbeError("server error 0x%04x: %s" % (code, payload[6 : 6 + mlen].decode("utf-8", "replace")))
    return op, payload


def _string(s):
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b


def _read_string(buf, pos):
    (n,) = struct.unpack_from(">H", buf, pos)
    return buf[pos + 2 : pos + 2 + n].decode("utf-8"), pos + 2 + n


def _rows(payload):
    """Position of the first row and the row count of a Rows RESULT."""
    kind, flags, ncols = struct.unpack_from(">iii", payload, 0)
    if kind != 2:
        raise ProbeError("RESULT kind %d, expected Rows" % kind)
    pos = 12
    if flags & 0x0002:  # has_more_pages: paging state precedes the specs
        (n,) = struct.unpack_from(">i", payload, pos)
        pos += 4 + max(n, 0)
    if flags & 0x0001:  # global_tables_spec
        _, pos = _read_string(payload, pos)
        _, pos = _read_string(payload, pos)
    for _ in range(ncols):
        if not flags & 0x0001:
            _, pos = _read_string(payload, pos)
            _, pos = _read_string(payload, pos)
        _, pos = _read_string(payload, pos)  # column name
        (type_id,) = struct.unpack_from(">H", payload, pos)
        pos += 2
        if type_id == 0x0000:  # custom type carries a class name
            _, pos = _read_string(payload, pos)
    (nrows,) = struct.unpack_from(">i", payload, pos)
    return pos + 4, nrows


def _first_text_cell(payload):
    """Value of the first column of the first row of a Rows RESULT (system.local has one row)."""
    pos, nrows = _rows(payload)
    if nrows < 1:
        raise ProbeError("system.local returned no rows")
    (n,) = struct.unpack_from(">i", payload, pos)
    return payload[pos + 4 : pos + 4 + n].decode("utf-8") if n >= 0 else None


def _query(sock, query):
    body = struct.pack(">i", len(query)) + query.encode() + struct.pack(">HB", 0x0001, 0)  # CL ONE, no flags
    op, payload = _request(sock, OP_QUERY, body)
    if op != OP_RESULT:
        raise ProbeError("QUERY answered with opcode 0x%02x" % op)
    return payload


def probe(host, port, user, password, expect_auth_required, timeout, peers):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        op, _ = _request(sock, OP_OPTIONS)
        if op != OP_SUPPORTED:
            raise ProbeError("OPTIONS answered with opcode 0x%02x" % op)
        op, payload = _request(sock, OP_STARTUP, struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0"))
        if op == OP_AUTHENTICATE:
            if expect_auth_required:
                return "authentication required (as expected)"
            if user is None:
                authenticator, _ = _read_string(payload, 0)
                raise ProbeError("server requires authentication (%s); pass --user/--password" % authenticator)
            token = b"\x00" + user.encode() + b"\x00" + password.encode()
            op, _ = _request(sock, OP_AUTH_RESPONSE, struct.pack(">i", len(token)) + token)
            if op != OP_AUTH_SUCCESS:
                raise ProbeError("AUTH_RESPONSE answered with opcode 0x%02x" % op)
        elif op != OP_READY:
            raise ProbeError("STARTUP answered with opcode 0x%02x" % op)
        elif expect_auth_required:
            raise ProbeError("anonymous STARTUP was accepted, but authentication was expected")
        version = _first_text_cell(_query(sock, "SELECT release_version FROM system.local"))
        if peers:
            _, known = _rows(_query(sock, "SELECT peer FROM system.peers"))
            if known < peers:
                raise ProbeError("%d peers known, %d expected" % (known, peers))
        return "release_version %s" % version


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--user")
    ap.add_argument("--password", default="")
    ap.add_argument("--expect-auth-required", action="store_true")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--peers", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    try:
        msg = probe(a.host, a.port, a.user, a.password, a.expect_auth_required, a.timeout, a.peers)
    except (OSError, ProbeError, struct.error) as e:
        if not a.quiet:
            print("CQL check failed on %s:%d: %s" % (a.host, a.port, e), file=sys.stderr)
        return 1
    if not a.quiet:
        print("CQL OK on %s:%d: %s" % (a.host, a.port, msg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
