import ArgumentParser
import Foundation
import PeerMesh

/// `ugate id`: prints this node's identity, creating the key on first run.
struct Id: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the node ID, VIP6, public key, certificate fingerprint and mangled hostname.")

    @Option(help: "Directory with key.pem (created with mode 0600 on first run), cert.pem and optional cert-chain.pem.")
    var identityDir: String = Id.defaultIdentityDir

    @Option(help: "Namespace part of the mangled hostname ID.namespace.trustdomain.")
    var namespace: String = "default"

    @Option(help: "Trust domain part of the mangled hostname and SPIFFE ID.")
    var trustDomain: String = "cluster.local"

    @Flag(help: "Print JSON instead of text.")
    var json = false

    /// `$HOME/.ugate/identity`.
    static var defaultIdentityDir: String {
        (ProcessInfo.processInfo.environment["HOME"] ?? ".") + "/.ugate/identity"
    }

    func run() throws {
        let identity = try NodeIdentity.loadOrCreate(
            directory: identityDir, naming: MeshNaming(namespace: namespace, trustDomain: trustDomain))
        let fields: [(String, String)] = [
            ("id", identity.node.id),
            ("vip6", identity.node.vip6),
            ("publicKey", identity.publicKeyBase64URL),
            ("fingerprint", identity.fingerprint),
            ("hostname", identity.mangledHostname),
            ("spiffe", identity.spiffeID),
        ]
        if json {
            let object = Dictionary(uniqueKeysWithValues: fields)
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for (name, value) in fields { print("\(name): \(value)") }
        }
    }
}
