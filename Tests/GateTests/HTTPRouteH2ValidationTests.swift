import Foundation
import XCTest

@testable import Gate

/// Received HTTP/2 requests are checked by the gateway itself (RFC 9113 §8.2, §8.3.1;
/// NIO's header-block validator is switched off): a raw HTTP/2 client (Python `hpack` +
/// `hyperframe`, so it can send what `h2` would refuse) sends malformed HEADERS and trailers
/// on one h2c connection, each answered with RST_STREAM(PROTOCOL_ERROR), while the valid
/// requests around them on the same connection get their 200 from a real backend.
final class HTTPRouteH2ValidationTests: XCTestCase {
    /// argv: port, then one request per argument: `name|field=value|field=value…` (fields in
    /// order, values percent-decoded; `trailer:` before a field puts it in a trailer section
    /// after a 3-byte body; `body=…` sends that body in one DATA frame with END_STREAM).
    /// Prints `name=200` or `name=rst<code>` per request, in order.
    static let client = """
        import socket, sys
        from hpack import Encoder, Decoder
        from hyperframe.frame import Frame, DataFrame, HeadersFrame, RstStreamFrame, SettingsFrame
        from urllib.parse import unquote_to_bytes
        port, cases = int(sys.argv[1]), sys.argv[2:]
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        enc, dec = Encoder(), Decoder()
        out = b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + SettingsFrame(0).serialize()
        names = {}
        for i, case in enumerate(cases):
            sid = 1 + 2 * i
            name, *fields = case.split("|")
            names[sid] = name
            head = [f.split("=", 1) for f in fields if not f.startswith("trailer:") and not f.startswith("body=")]
            trailer = [f[len("trailer:"):].split("=", 1) for f in fields if f.startswith("trailer:")]
            body = [unquote_to_bytes(f[len("body="):]) for f in fields if f.startswith("body=")]
            block = enc.encode([(k.encode(), unquote_to_bytes(v)) for k, v in head], huffman=False)
            if trailer:
                out += HeadersFrame(sid, block, flags=["END_HEADERS"]).serialize()
                out += DataFrame(sid, b"abc").serialize()
                block = enc.encode([(k.encode(), unquote_to_bytes(v)) for k, v in trailer], huffman=False)
            if body:
                out += HeadersFrame(sid, block, flags=["END_HEADERS"]).serialize()
                out += DataFrame(sid, body[0], flags=["END_STREAM"]).serialize()
            else:
                out += HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
        sock.sendall(out)
        buf, results = b"", {}
        \(pythonNextFrame)
        while len(results) < len(cases):
            frame = next_frame()
            if frame is None:
                break
            if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
            elif isinstance(frame, HeadersFrame) and frame.stream_id in names:
                results.setdefault(frame.stream_id, dict(dec.decode(frame.data, raw=True))[b":status"].decode())
            elif isinstance(frame, RstStreamFrame) and frame.stream_id in names:
                results.setdefault(frame.stream_id, f"rst{frame.error_code}")
        print(" ".join(f"{names[s]}={results.get(s, 'closed')}" for s in sorted(names)))
        """

    func testMalformedRequestsAreResetAndTheConnectionServes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("h2valid-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(dir)/routes", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try PythonBackend("valid")
        defer { backend.stop() }
        try writeOneBackendRoute("valid", in: "\(dir)/routes")
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let json = """
            {"manifests": "\(dir)/routes", "services": {"valid": "\(backend.address)"}, "listeners": [{"name": "h2c", "port": 0}]}
            """
        let service = try HTTPRouteService(config: try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(json.utf8)), bind: "127.0.0.1", loops: loops)
        defer { service.stop() }
        let get = ":method=GET|:scheme=http|:authority=valid.example"
        let upload = ":method=POST|:scheme=http|:path=/upload|:authority=valid.example"
        let post = "\(upload)|content-length=3"
        let cases: [(name: String, fields: String, expected: String)] = [
            ("valid", "\(get)|:path=/a|accept=*/*", "200"),
            ("upper-case-name", "\(get)|:path=/a|X-Upper=1", "rst1"),
            ("connection", "\(get)|:path=/a|connection=keep-alive", "rst1"),
            ("keep-alive", "\(get)|:path=/a|keep-alive=5", "rst1"),
            ("transfer-encoding", "\(get)|:path=/a|transfer-encoding=chunked", "rst1"),
            ("upgrade", "\(get)|:path=/a|upgrade=h2c", "rst1"),
            ("te-gzip", "\(get)|:path=/a|te=gzip", "rst1"),
            ("te-trailers", "\(get)|:path=/a|te=trailers", "200"),
            ("no-scheme", ":method=GET|:path=/a|:authority=valid.example", "rst1"),
            ("no-method", ":scheme=http|:path=/a|:authority=valid.example", "rst1"),
            ("no-path", get, "rst1"),
            ("empty-path", "\(get)|:path=", "rst1"),
            ("pseudo-after-regular", ":method=GET|:scheme=http|accept=*/*|:path=/a|:authority=valid.example", "rst1"),
            ("repeated-path", "\(get)|:path=/a|:path=/b", "rst1"),
            ("unknown-pseudo", "\(get)|:path=/a|:foo=bar", "rst1"),
            ("status-in-request", "\(get)|:path=/a|:status=200", "rst1"),
            ("space-in-path", "\(get)|:path=/a%20b", "rst1"),
            ("cr-in-value", "\(get)|:path=/a|x-a=b%0Dc", "rst1"),
            ("lf-in-value", "\(get)|:path=/a|x-a=b%0Ac", "rst1"),
            ("nul-in-value", "\(get)|:path=/a|x-a=b%00c", "rst1"),
            ("bad-name-byte", "\(get)|:path=/a|x(a=1", "rst1"),
            ("connect", ":method=CONNECT|:authority=valid.example:443", "rst1"),
            ("pseudo-in-trailers", "\(post)|trailer::path=/x", "rst1"),
            ("connection-in-trailers", "\(post)|trailer:connection=close", "rst1"),
            ("valid-trailers", "\(post)|trailer:x-checksum=abc", "200"),
            // DATA against content-length (RFC 9113 §8.1.1), checked by the gateway.
            ("length-exact", "\(post)|body=abc", "200"),
            ("length-body-longer", "\(upload)|content-length=2|body=abc", "rst1"),
            ("length-body-shorter", "\(upload)|content-length=5|body=abc", "rst1"),
            ("length-short-at-trailers", "\(upload)|content-length=4|trailer:x-checksum=abc", "rst1"),
            ("length-with-end-stream", "\(get)|:path=/a|content-length=4", "rst1"),
            ("length-zero-end-stream", "\(get)|:path=/a|content-length=0", "200"),
            ("length-not-a-number", "\(upload)|content-length=3x|body=abc", "rst1"),
            ("length-repeated-same", "\(upload)|content-length=3|content-length=3|body=abc", "200"),
            ("length-repeated-other", "\(upload)|content-length=3|content-length=4|body=abc", "rst1"),
            ("valid-after", "\(get)|:path=/b", "200"),
        ]
        let port = "\(service.bound[0].address.port)"
        let r = try runProcess("/usr/bin/env", ["python3", "-c", Self.client, port] + cases.map { "\($0.name)|\($0.fields)" }, timeout: 60)
        XCTAssertEqual(r.status, 0, r.err)
        let got = r.out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").map(String.init)
        XCTAssertEqual(got, cases.map { "\($0.name)=\($0.expected)" })
    }
}
