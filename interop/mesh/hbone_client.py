#!/usr/bin/env python3
"""A foreign HBONE client for ugate: Python `h2` over `ssl` with a client certificate.

Opens an mTLS connection (ALPN h2) to a ugate mesh port, pins the server certificate by its
SHA-256 fingerprint (no CA), sends `CONNECT` with `:authority` = the destination and, on 200,
checks an echo destination both ways:

  1. sends a first chunk and reads its echo while the stream is still open;
  2. sends the rest, half-closes (END_STREAM), and reads until the server's END_STREAM.

Prints one JSON object: {"status", "error", "sent", "received", "match"}. Exit status 0 when the
response status equals --expect-status (and, for 200, every echoed byte matched), else 1.

Needs: pip install h2
"""
import argparse
import hashlib
import json
import os
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events


class Client:
    def __init__(self, sock):
        self.sock = sock
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 << 20)
        self.flush()
        self.status = None
        self.headers = {}
        self.received = bytearray()
        self.ended = False
        self.reset = None

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise RuntimeError("connection closed by the server")
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.headers = dict(event.headers)
                self.status = int(self.headers.get(":status", "0"))
            elif isinstance(event, h2.events.DataReceived):
                self.received += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.reset = event.error_code
        self.flush()

    def send(self, sid, payload):
        view = memoryview(payload)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump()
                continue
            self.conn.send_data(sid, bytes(view[:window]))
            self.flush()
            view = view[window:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connect", required=True, help="mesh port host:port")
    ap.add_argument("--cert", required=True, help="client certificate PEM")
    ap.add_argument("--key", required=True, help="client private key PEM")
    ap.add_argument("--fingerprint", required=True, help="server certificate SHA-256, hex pairs with ':'")
    ap.add_argument("--server-name", required=True, help="SNI: the server's mangled hostname")
    ap.add_argument("--authority", required=True, help="destination host:port")
    ap.add_argument("--size", type=int, default=1 << 20, help="bytes to send in total")
    ap.add_argument("--expect-status", type=int, default=200)
    args = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # pinned by fingerprint below, not by a CA
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["h2"])
    host, port = args.connect.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=30)
    sock = ctx.wrap_socket(raw, server_hostname=args.server_name)
    if sock.selected_alpn_protocol() != "h2":
        sys.exit(f"server negotiated ALPN {sock.selected_alpn_protocol()!r}, expected h2")
    seen = hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest().upper()
    want = args.fingerprint.replace(":", "").upper()
    if seen != want:
        sys.exit(f"server certificate fingerprint {seen} is not the pinned {want}")

    client = Client(sock)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", args.authority)])
    client.flush()
    while client.status is None and client.reset is None:
        client.pump()

    result = {"status": client.status, "error": client.headers.get("error"), "sent": 0, "received": 0, "match": False}
    if client.status == 200:
        payload = os.urandom(args.size)
        first = payload[: min(1000, len(payload))]
        client.send(sid, first)
        while len(client.received) < len(first) and not client.ended:
            client.pump()
        open_echo_ok = bytes(client.received) == first and not client.ended
        client.send(sid, payload[len(first):])
        client.conn.end_stream(sid)
        client.flush()
        while not client.ended and client.reset is None:
            client.pump()
        result.update(sent=len(payload), received=len(client.received),
                      match=open_echo_ok and hashlib.sha256(client.received).digest() == hashlib.sha256(payload).digest())
    print(json.dumps(result))
    ok = client.status == args.expect_status and (client.status != 200 or result["match"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
