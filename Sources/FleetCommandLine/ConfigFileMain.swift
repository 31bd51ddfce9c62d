import ArgumentParser

#if canImport(Glibc)
    import Glibc
#endif

/// The start of `fleet-agent` and `fleet-controller`: both read a configuration file before
/// ArgumentParser sees the command line. Kept free of Foundation, so that the static agent
/// binary gains nothing by sharing it.
extension AsyncParsableCommand {
    /// Runs the command line as `main()` does, after `expand` put the configuration file's keys in
    /// as flags before the ones given by hand (which therefore win). A file that cannot be read or
    /// is refused ends the process with EX_CONFIG (78) and the reason on standard error, before
    /// any argument is parsed.
    public static func main(expandingConfigFile expand: ([String]) throws -> [String]) async {
        let argv: [String]
        do {
            argv = try expand(Array(CommandLine.arguments.dropFirst()))
        } catch {
            let name = configuration.commandName ?? CommandLine.arguments.first ?? "edgefleet"
            let line = Array("\(name): \(error)\n".utf8)
            _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            Glibc.exit(78)  // EX_CONFIG
        }
        do {
            var command = try parseAsRoot(argv)
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
