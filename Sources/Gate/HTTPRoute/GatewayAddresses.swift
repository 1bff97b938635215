import CLinux
import Glibc

/// What the configured listeners serving a Gateway bind, from its `spec.addresses`: each
/// `IPAddress` as it is, each `Hostname` resolved (`getaddrinfo`, as the node's resolver
/// answers: `/etc/hosts`, DNS, mDNS when configured) to the addresses it names that belong to
/// this node (an interface's, `getifaddrs`; loopback included). A Hostname that does not
/// resolve, or names no address of this node, gives nothing to bind and a problem for the
/// Gateway's status (`Programmed: False`, `AddressNotAssigned` / `AddressNotUsable`).
struct GatewayBindAddresses: Equatable, Sendable {
    /// The IP addresses to bind, in order, once each.
    var hosts: [String]
    /// Why a Hostname gives nothing to bind.
    var problems: [AddressProblem] = []

    /// One Hostname that gives nothing to bind: the Gateway API's reason
    /// (`AddressNotAssigned`: it does not resolve; `AddressNotUsable`: no address it resolves
    /// to is this node's) and a message naming it.
    struct AddressProblem: Equatable, Sendable {
        var reason: String
        var message: String
    }

    /// A name's addresses, or why it does not resolve.
    typealias Resolver = @Sendable (String) -> Result<[String], ResolveError>

    struct ResolveError: Error, Equatable {
        var message: String
    }

    /// `ips` as they are, then the local addresses of each of `hostnames`; `resolve` and
    /// `local` are the node's resolver and interface addresses (given for tests).
    static func resolve(
        ips: [String], hostnames: [String], resolve: Resolver = GatewayBindAddresses.getaddrinfo,
        local: () -> Set<String> = GatewayBindAddresses.interfaceAddresses
    ) -> GatewayBindAddresses {
        var result = GatewayBindAddresses(hosts: ips)
        guard !hostnames.isEmpty else { return result }
        let own = local()
        for hostname in hostnames {
            switch resolve(hostname) {
            case .failure(let error):
                result.problems.append(AddressProblem(reason: "AddressNotAssigned", message: "Hostname \(hostname) does not resolve: \(error.message)"))
            case .success(let addresses):
                let usable = addresses.filter(own.contains)
                guard !usable.isEmpty else {
                    result.problems.append(
                        AddressProblem(
                            reason: "AddressNotUsable",
                            message: "Hostname \(hostname) resolves to \(addresses.joined(separator: ", ")): no address of this node"))
                    continue
                }
                for address in usable where !result.hosts.contains(address) { result.hosts.append(address) }
            }
        }
        return result
    }

    /// The node's resolver: the IPv4 and IPv6 addresses of `hostname`, in its order, once each.
    static let getaddrinfo: Resolver = { hostname in
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = Glibc.getaddrinfo(hostname, nil, &hints, &list)
        guard status == 0 else { return .failure(ResolveError(message: String(cString: gai_strerror(status)))) }
        defer { freeaddrinfo(list) }
        var addresses: [String] = []
        var entry = list
        while let info = entry {
            if let address = info.pointee.ai_addr.flatMap(numericHost), !addresses.contains(address) { addresses.append(address) }
            entry = info.pointee.ai_next
        }
        return addresses.isEmpty ? .failure(ResolveError(message: "no IPv4 or IPv6 address")) : .success(addresses)
    }

    /// The addresses of this node's interfaces (`getifaddrs`), as `numericHost` writes them.
    static func interfaceAddresses() -> Set<String> {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var addresses: Set<String> = []
        var entry = list
        while let item = entry {
            if let address = item.pointee.ifa_addr.flatMap(numericHost) { addresses.insert(address) }
            entry = item.pointee.ifa_next
        }
        return addresses
    }

    /// An IPv4 or IPv6 socket address as text (as `SocketAddress` has it: no port, no IPv6
    /// scope); nil for other families.
    private static func numericHost(_ address: UnsafeMutablePointer<sockaddr>) -> String? {
        SocketAddress(storage: UnsafeRawPointer(address).assumingMemoryBound(to: sockaddr_storage.self))?.host
    }
}
