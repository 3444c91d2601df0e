using System.CommandLine;
using System.CommandLine.Invocation;
using System.Reflection;
using FineAlign.Cli.Commands;
using YamlDotNet.Core;

namespace FineAlign.Cli;

/// <summary>
/// The <c>finealign</c> entry point. Adding a command = one file in Commands/ with a static <c>Create()</c> (see
/// <see cref="CorpusCommand"/>) plus one line in <see cref="BuildRootCommand"/>.
/// Exit codes: 0 ok, 1 error (one red line <c>error: ...</c> on stderr), 2 usage error, 130 cancelled (Ctrl+C).
/// </summary>
public static class CliApp
{
    public const string DebugEnvironmentVariable = "FINEALIGN_DEBUG";

    public static RootCommand BuildRootCommand()
    {
        var root = new RootCommand("FineAlign: fine-grained reward alignment of causal language models (SFT, DPO, PPO, ...) on TorchSharp.");
        root.Add(new Option<bool>("--verbose", "-v")
        {
            Description = $"Print stack traces on errors (same as {DebugEnvironmentVariable}=1).",
            Recursive = true,
        });
        // --version prints this assembly's version (the default uses the entry assembly, wrong in-process).
        foreach (var v in root.Options.OfType<VersionOption>()) v.Action = new PrintVersion();
        root.Add(DemoCommand.Create());
        root.Add(PretrainCommand.Create());
        root.Add(SftCommand.Create());
        root.Add(RmCommand.Create());
        root.Add(DpoCommand.Create());
        root.Add(KtoCommand.Create());
        root.Add(BcoCommand.Create());
        root.Add(EvalRmCommand.Create());
        root.Add(EvalPrefCommand.Create());
        root.Add(CorpusCommand.Create());
        root.Add(GenerateCommand.Create());
        root.Add(LogprobsCommand.Create());
        root.Add(ConvertCommand.Create());
        root.Add(VersionCommand.Create());
        root.Add(TlcrLabelCommand.Create());
        root.Add(TlcrTrainCommand.Create());
        root.Add(OnlineRlCommand.Create("ppo"));
        root.Add(PpoCompareCommand.Create());
        root.Add(OnlineRlCommand.Create("grpo"));
        root.Add(OnlineRlCommand.Create("rloo"));
        root.Add(AlolCommand.Create());
        root.Add(BonCommand.Create());
        root.Add(ReportCommand.Create());
        root.Add(ServeCommand.Create());
        // Bare `finealign` shows help, like `dotnet`.
        root.SetAction(parseResult => root.Parse(["--help"]).Invoke(parseResult.InvocationConfiguration));
        return root;
    }

    /// <summary>Runs the CLI in-process; <paramref name="output"/>/<paramref name="error"/> default to the console.</summary>
    public static int Run(string[] args, TextWriter? output = null, TextWriter? error = null) =>
        RunAsync(args, output, error).GetAwaiter().GetResult();

    public static async Task<int> RunAsync(string[] args, TextWriter? output = null, TextWriter? error = null,
        CancellationToken cancellationToken = default)
    {
        output ??= Console.Out;
        error ??= Console.Error;
        bool verbose = args.Contains("--verbose") || args.Contains("-v") ||
                       Environment.GetEnvironmentVariable(DebugEnvironmentVariable) is "1" or "true";
        var root = BuildRootCommand();
        var parseResult = root.Parse(args);
        if (parseResult.Action is ParseErrorAction)
            return ReportUsageErrors(parseResult, root, error);

        var configuration = new InvocationConfiguration
        {
            Output = output,
            Error = error,
            EnableDefaultExceptionHandler = false,   // we print one line instead of a stack trace
        };
        // serve drains in-flight requests on SIGTERM/Ctrl+C itself (ASP.NET Core's console lifetime), which can take
        // longer than System.CommandLine's 2-second termination grace.
        if (parseResult.CommandResult.Command.Name == ServeCommand.Name) configuration.ProcessTerminationTimeout = null;
        try
        {
            return await parseResult.InvokeAsync(configuration, cancellationToken);
        }
        catch (Exception ex)
        {
            return ReportException(ex, error, verbose);
        }
    }

    /// <summary>Prints an exception as one line (plus the stack trace when verbose) and returns the exit code.</summary>
    public static int ReportException(Exception ex, TextWriter error, bool verbose)
    {
        if (ex is AggregateException { InnerExceptions.Count: 1 } agg) ex = agg.InnerExceptions[0];
        if (ex is TargetInvocationException { InnerException: { } inner }) ex = inner;
        (string message, int code) = ex switch
        {
            OperationCanceledException => ("cancelled", 130),
            UsageException => (ex.Message, 2),
            FineAlignException or IOException or UnauthorizedAccessException => (ex.Message, 1),
            YamlException => ("invalid YAML: " + ex.Message, 1),
            _ => ($"unexpected {ex.GetType().Name}: {ex.Message}" +
                  (verbose ? "" : $" (run with --verbose or {DebugEnvironmentVariable}=1 for the stack trace)"), 1),
        };
        WriteError(error, message);
        if (verbose) error.WriteLine(ex.ToString());
        return code;
    }

    /// <summary>Writes <c>error: message</c> as one line, red when stderr is a colour terminal.</summary>
    public static void WriteError(TextWriter error, string message)
    {
        string line = "error: " + message.ReplaceLineEndings(" ").Trim();
        bool color = ReferenceEquals(error, Console.Error) && !Console.IsErrorRedirected &&
                     Environment.GetEnvironmentVariable("NO_COLOR") is null;
        error.WriteLine(color ? $"\u001b[31m{line}\u001b[0m" : line);
    }

    private static int ReportUsageErrors(ParseResult parseResult, RootCommand root, TextWriter error)
    {
        foreach (var e in parseResult.Errors)
            WriteError(error, e.Message);
        // Suggest a command for a mistyped first word ("finealign corpsu").
        if (parseResult.CommandResult.Command == root && parseResult.UnmatchedTokens.Count > 0 &&
            Recipe.Suggest(parseResult.UnmatchedTokens[0], root.Subcommands.Select(c => c.Name)) is { } near)
            error.WriteLine($"Did you mean '{near}'?");
        string path = parseResult.CommandResult.Command == root ? "finealign" : $"finealign {parseResult.CommandResult.Command.Name}";
        error.WriteLine($"Run '{path} --help' for usage.");
        return 2;
    }

    private sealed class PrintVersion : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            parseResult.InvocationConfiguration.Output.WriteLine(Version);
            return 0;
        }
    }

    /// <summary>Informational version without the "+commit" suffix.</summary>
    public static string Version
    {
        get
        {
            string v = typeof(CliApp).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
                       ?? typeof(CliApp).Assembly.GetName().Version?.ToString() ?? "0.0.0";
            int plus = v.IndexOf('+');
            return plus >= 0 ? v[..plus] : v;
        }
    }
}
