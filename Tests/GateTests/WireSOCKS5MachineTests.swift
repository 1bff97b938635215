import XCTest

@testable import Gate

final class WireSOCKS5MachineTests: XCTestCase {
    typealias Action = SOCKS5ServerMachine.Action

    /// Feeds `chunks` to `machine`, answering every `.verifyCredentials` with `accept` right
    /// after the chunk's actions; returns all actions in order.
    static func drive(_ machine: inout SOCKS5ServerMachine, _ chunks: [[UInt8]], accept: (String, String) -> Bool = { _, _ in true }) -> [Action] {
        var all: [Action] = []
        for chunk in chunks {
            var pending = machine.receive(chunk)
            while !pending.isEmpty {
                let action = pending.removeFirst()
                all.append(action)
                if case .verifyCredentials(let user, let password) = action {
                    pending += machine.credentialsVerified(accept(user, password))
                }
            }
        }
        return all
    }

    /// Runs one client byte stream through a fresh machine in every chunking (whole, split at
    /// every offset, byte-at-a-time); all must give the same actions and the same buffered
    /// payload. Returns the machine after the whole-stream run and its actions, and checks the
    /// payload it would hand out right then against `payload`.
    func dialog(
        _ mode: SOCKS5ServerMachine.AuthMode, _ bytes: [UInt8], payload expectedPayload: [UInt8] = [],
        file: StaticString = #filePath, line: UInt = #line, accept: (String, String) -> Bool = { _, _ in true }
    ) -> (SOCKS5ServerMachine, [Action]) {
        var reference: (SOCKS5ServerMachine, [Action], [UInt8])?
        for chunks in Feed.chunkings(bytes) {
            var machine = SOCKS5ServerMachine(authMode: mode)
            let actions = Self.drive(&machine, chunks, accept: accept)
            var probe = machine
            let payload = probe.takeBufferedPayload()
            if let reference {
                XCTAssertEqual(actions, reference.1, "\(chunks.count) chunks", file: file, line: line)
                XCTAssertEqual(payload, reference.2, "payload with \(chunks.count) chunks", file: file, line: line)
            } else {
                reference = (machine, actions, payload)
            }
        }
        XCTAssertEqual(reference!.2, expectedPayload, "payload held while the outcome is pending", file: file, line: line)
        return (reference!.0, reference!.1)
    }

    let payload = Array("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".utf8)

    func testNoAuthConnectIPv4WithPipelinedPayload() {
        let destination = Destination(host: "192.0.2.10", port: 80)
        let request = SOCKS5Request(command: .connect, destination: destination).encoded()
        var (machine, actions) = dialog(.none, [5, 1, 0] + request + payload, payload: payload)
        XCTAssertEqual(actions, [.send([5, 0]), .connect(destination)])
        XCTAssertFalse(machine.isEstablished)
        XCTAssertEqual(machine.request?.addressType, .ipv4)
        XCTAssertEqual(machine.connected(bound: Destination(host: "10.0.0.2", port: 50000)), [5, 0, 0, 1, 10, 0, 0, 2, 0xc3, 0x50])
        XCTAssertTrue(machine.isEstablished)
        XCTAssertEqual(machine.takeBufferedPayload(), payload)
        XCTAssertEqual(machine.takeBufferedPayload(), [], "payload is handed out once")
    }

    func testPayloadArrivingWhileDialingIsKeptInOrder() {
        var machine = SOCKS5ServerMachine(authMode: .none)
        let destination = Destination(host: "example.com", port: 443)
        XCTAssertEqual(machine.receive([5, 1, 0] + SOCKS5Request(command: .connect, destination: destination).encoded() + [1, 2]),
                       [.send([5, 0]), .connect(destination)])
        XCTAssertEqual(machine.receive([3, 4]), [])
        _ = machine.connected(bound: Destination(host: "127.0.0.1", port: 1))
        XCTAssertEqual(machine.receive([5]), [])
        XCTAssertEqual(machine.takeBufferedPayload(), [1, 2, 3, 4, 5])
    }

    func testUsernamePasswordAcceptedThenDomainConnect() {
        let destination = Destination(host: "example.org", port: 8443)
        let bytes = [5, 2, 0, 2] + SOCKS5UsernamePasswordRequest(username: "alice", password: "pw").encoded()
            + SOCKS5Request(command: .connect, destination: destination).encoded() + payload
        var seen: [(String, String)] = []
        var (machine, actions) = dialog(.usernamePassword, bytes, payload: payload) { user, password in
            seen.append((user, password))
            return user == "alice" && password == "pw"
        }
        XCTAssertEqual(actions, [.send([5, 2]), .verifyCredentials(username: "alice", password: "pw"), .send([1, 0]), .connect(destination)])
        XCTAssertTrue(seen.allSatisfy { $0 == ("alice", "pw") })
        XCTAssertEqual(machine.username, "alice")
        XCTAssertEqual(machine.request?.addressType, .domainName)
        _ = machine.connected(bound: Destination(host: "::1", port: 2))
        XCTAssertEqual(machine.takeBufferedPayload(), payload)
    }

    func testUsernamePasswordRejected() {
        let bytes = [5, 1, 2] + SOCKS5UsernamePasswordRequest(username: "mallory", password: "guess").encoded()
            + SOCKS5Request(command: .connect, destination: Destination(host: "10.0.0.1", port: 22)).encoded()
        var (machine, actions) = dialog(.usernamePassword, bytes) { _, _ in false }
        XCTAssertEqual(actions.count, 4)
        XCTAssertEqual(Array(actions.prefix(3)), [.send([5, 2]), .verifyCredentials(username: "mallory", password: "guess"), .send([1, 1])])
        guard case .close(let error) = actions.last else { return XCTFail("no close after rejected credentials: \(actions)") }
        XCTAssertEqual(error.code, .authenticationFailed)
        XCTAssertTrue(error.message.contains("mallory"), error.message)
        XCTAssertTrue(machine.isClosed)
        XCTAssertEqual(machine.receive([1, 2, 3]), [])
        XCTAssertEqual(machine.takeBufferedPayload(), [], "nothing of a refused client is forwarded")
    }

    func testIPv6ConnectRefusedGivesReplyCode5() {
        let destination = Destination(host: "2001:db8::7", port: 443)
        var (machine, actions) = dialog(.none, [5, 1, 0] + SOCKS5Request(command: .connect, destination: destination).encoded())
        XCTAssertEqual(actions, [.send([5, 0]), .connect(destination)])
        XCTAssertEqual(machine.request?.addressType, .ipv6)
        XCTAssertEqual(machine.failed(.connectionRefused), [5, 5, 0, 1, 0, 0, 0, 0, 0, 0])
        XCTAssertTrue(machine.isClosed)
        XCTAssertEqual(machine.connected(bound: destination), [], "no success after failure")
    }

    func testUDPAssociate() {
        let client = Destination(host: "0.0.0.0", port: 0)
        var (machine, actions) = dialog(.none, [5, 1, 0] + SOCKS5Request(command: .udpAssociate, destination: client).encoded())
        XCTAssertEqual(actions, [.send([5, 0]), .udpAssociate(client)])
        XCTAssertEqual(machine.connected(bound: Destination(host: "127.0.0.1", port: 15005)), [5, 0, 0, 1, 127, 0, 0, 1, 0x3a, 0x9d])
        XCTAssertTrue(machine.isEstablished)
    }

    func testNoAcceptableMethod() {
        for (mode, offered) in [(SOCKS5ServerMachine.AuthMode.usernamePassword, [UInt8(0)]), (.none, [2, 1])] {
            let (machine, actions) = dialog(mode, [5, UInt8(offered.count)] + offered)
            XCTAssertEqual(actions.first, .send([5, 0xFF]))
            guard case .close(let error) = actions.last, actions.count == 2 else { return XCTFail("\(actions)") }
            XCTAssertEqual(error.code, .noAcceptableMethod)
            XCTAssertTrue(machine.isClosed)
        }
    }

    func testUnsupportedCommandsAndAddressTypesAreRefusedWithTheirCodes() {
        let cases: [([UInt8], SOCKS5ReplyCode, WireError.Code)] = [
            ([5, 9, 0, 1, 1, 2, 3, 4, 0, 80], .commandNotSupported, .unsupportedCommand),
            ([5, 2, 0, 1, 1, 2, 3, 4, 0, 80], .commandNotSupported, .unsupportedCommand),
            ([5, 1, 0, 9, 1, 2, 3, 4, 0, 80], .addressTypeNotSupported, .unsupportedAddressType),
            ([5, 1, 7, 1, 1, 2, 3, 4, 0, 80], .generalFailure, .malformed),
        ]
        for (request, code, errorCode) in cases {
            let (machine, actions) = dialog(.none, [5, 1, 0] + request)
            guard actions.count == 2, case .refuse(let replyCode, let error, let reply) = actions[1] else {
                return XCTFail("\(request): \(actions)")
            }
            XCTAssertEqual(replyCode, code)
            XCTAssertEqual(error.code, errorCode)
            XCTAssertEqual(reply, [5, code.rawValue, 0, 1, 0, 0, 0, 0, 0, 0])
            XCTAssertTrue(machine.isClosed)
        }
    }

    func testSOCKS4ClientIsClosedWithoutAReply() {
        let (machine, actions) = dialog(.none, [4, 1, 0, 80, 127, 0, 0, 1, 0x61, 0])
        guard actions.count == 1, case .close(let error) = actions[0] else { return XCTFail("\(actions)") }
        XCTAssertEqual(error.message, "SOCKS version 4 not supported")
        XCTAssertTrue(machine.isClosed)
    }

    func testBoundedBufferWhileDialing() {
        var machine = SOCKS5ServerMachine(authMode: .none, maxBufferedBytes: 8)
        _ = machine.receive([5, 1, 0] + SOCKS5Request(command: .connect, destination: Destination(host: "10.0.0.1", port: 1)).encoded())
        XCTAssertEqual(machine.receive([UInt8](repeating: 0, count: 8)), [])
        let actions = machine.receive([0])
        guard case .close(let error) = actions.first else { return XCTFail("\(actions)") }
        XCTAssertEqual(error.code, .tooLarge)
        XCTAssertTrue(machine.isClosed)
    }

    func testOutOfOrderCallsAreHarmless() {
        var machine = SOCKS5ServerMachine(authMode: .none)
        guard case .close(let error) = machine.credentialsVerified(true).first else { return XCTFail("no close") }
        XCTAssertEqual(error.code, .unexpectedMessage)
        var fresh = SOCKS5ServerMachine(authMode: .none)
        XCTAssertEqual(fresh.connected(bound: Destination(host: "1.1.1.1", port: 1)), [])
        XCTAssertEqual(fresh.failed(.generalFailure), [])
        XCTAssertEqual(fresh.takeBufferedPayload(), [])
    }
}
