import Foundation
import Glibc
import XCTest

@testable import Gate

/// The reload timer's file check (`FileStamp`: one `stat`, content hashed only for files that
/// changed in the last 2 s): what counts as a change, and that unchanged certificate files are
/// not opened at all (inotify `IN_OPEN` on their folder) while a replaced one is loaded.
final class HTTPRouteFileStampTests: XCTestCase {
    func testStampNoticesChanges() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/a.pem"
        try "first".write(toFile: path, atomically: false, encoding: .utf8)
        let first = try XCTUnwrap(FileStamp(path))
        XCTAssertTrue(first.same(as: FileStamp(path)))
        XCTAssertNotNil(first.content, "a file changed just now carries its content hash")
        XCTAssertNil(FileStamp(path, recent: 0)?.content, "an older file is only stat-ed")
        XCTAssertNil(FileStamp("\(dir)/missing"))
        XCTAssertFalse(first.same(as: nil))

        // Same size, written in place, mtime set back: the ctime (and the content hash) differ.
        var times = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
        XCTAssertEqual(utimensat(AT_FDCWD, path, &times, 0), 0)
        let old = try XCTUnwrap(FileStamp(path))
        try "other".write(toFile: path, atomically: false, encoding: .utf8)
        XCTAssertEqual(utimensat(AT_FDCWD, path, &times, 0), 0)
        let rewritten = try XCTUnwrap(FileStamp(path))
        XCTAssertEqual(rewritten.modified, old.modified)
        XCTAssertEqual(rewritten.size, old.size)
        XCTAssertFalse(rewritten.same(as: old))

        // Replaced by rename: another inode.
        try "third".write(toFile: "\(dir)/tmp", atomically: false, encoding: .utf8)
        XCTAssertEqual(rename("\(dir)/tmp", path), 0)
        let renamed = try XCTUnwrap(FileStamp(path))
        XCTAssertNotEqual(renamed.inode, rewritten.inode)
        XCTAssertFalse(renamed.same(as: rewritten))

        // Equal stat fields: the content hashes decide when both stamps have one.
        var twin = renamed
        twin.content = (renamed.content ?? 0) &+ 1
        XCTAssertFalse(twin.same(as: renamed))
        twin.content = nil
        XCTAssertTrue(twin.same(as: renamed))
        XCTAssertTrue(FileStamp.same(["a": renamed, "b": nil], ["a": twin, "b": nil]))
        XCTAssertFalse(FileStamp.same(["a": renamed], ["a": renamed, "b": nil]))
        XCTAssertFalse(FileStamp.same(["a": renamed], ["a": nil]))
    }

    /// `reloadCertificates()` on unchanged files opens none of them; a replaced pair is read
    /// and loaded.
    func testUnchangedCertificatesAreNotRead() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("stampcert-\(getpid())-\(UUID())").path
        for sub in ["certs", "new"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let files = try makeCertificate("quiet.example", file: "quiet.example", in: "\(dir)/certs")
        let tls = try HTTPRouteTLS(HTTPRouteTLSConfig(certificateDir: "\(dir)/certs"))
        // Past the 2 s in which a changed file's content is hashed too.
        sleep(3)
        XCTAssertEqual(tls.reloadCertificates(), [], "unchanged")

        let watch = inotify_init1(Int32(IN_NONBLOCK))
        XCTAssertGreaterThanOrEqual(watch, 0)
        defer { Glibc.close(watch) }
        XCTAssertGreaterThanOrEqual(inotify_add_watch(watch, "\(dir)/certs", UInt32(IN_OPEN)), 0)
        /// Names of the files in the folder opened since the last call (events on the folder
        /// itself — listing it — have no name). `struct inotify_event`: wd, mask, cookie, len
        /// (4 bytes each, host order), then `len` bytes of NUL-padded name.
        func opened() -> [String] {
            var buffer = [UInt8](repeating: 0, count: 4096)
            var names: [String] = []
            while true {
                let n = read(watch, &buffer, buffer.count)
                if n <= 0 { return names }
                var offset = 0
                while offset + 16 <= n {
                    let length = Int(buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self) })
                    let name = buffer[(offset + 16)..<min(n, offset + 16 + length)].prefix { $0 != 0 }
                    if !name.isEmpty { names.append(String(decoding: name, as: UTF8.self)) }
                    offset += 16 + length
                }
            }
        }
        for _ in 0..<5 { XCTAssertEqual(tls.reloadCertificates(), []) }
        XCTAssertEqual(opened(), [], "unchanged certificate files were opened")

        let fresh = try makeCertificate("quiet.example", file: "quiet.example", in: "\(dir)/new")
        XCTAssertEqual(rename(fresh.key, files.key), 0)
        XCTAssertEqual(rename(fresh.cert, files.cert), 0)
        XCTAssertEqual(tls.reloadCertificates(), ["quiet.example"])
        XCTAssertEqual(Set(opened()), ["quiet.example.crt", "quiet.example.key"], "the replaced files were not read")
    }
}
