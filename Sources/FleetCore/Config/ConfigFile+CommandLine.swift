/// Where a daemon's configuration file goes into its command line.
public enum ConfigFileCommandLine {
    /// `argv` (without the program name) with the arguments of the subcommand's configuration file
    /// inserted right after the subcommand's name, so that the parser sees one command line and the
    /// flags given by hand win. The file is `--config-file F`, else `defaultPath` when it exists.
    /// Other subcommands pass through untouched. `read` returns nil for a file that cannot be read.
    public static func expand(
        _ argv: [String], subcommand: String, schema: ConfigSchema, defaultPath: String,
        exists: (String) -> Bool, read: (String) -> String?
    ) throws(ConfigFileError) -> [String] {
        guard argv.first == subcommand else { return argv }
        let rest = Array(argv.dropFirst())
        guard let path = configFile(in: rest) ?? (exists(defaultPath) ? defaultPath : nil) else { return argv }
        guard let text = read(path) else {
            throw ConfigFileError(.unreadable, source: path, line: 0, "cannot be read")
        }
        let file = try ConfigFile.parse(text, source: path)
        return [subcommand] + (try file.arguments(schema: schema, overriddenBy: rest)) + rest
    }

    /// The value of `--config-file F` or `--config-file=F`, the last one given.
    public static func configFile(in args: [String]) -> String? {
        var found: String? = nil
        for (i, arg) in args.enumerated() {
            if arg == "--" { break }
            if arg == "--config-file", i + 1 < args.count { found = args[i + 1] }
            if arg.hasPrefix("--config-file=") { found = String(arg.dropFirst("--config-file=".count)) }
        }
        return found
    }
}
