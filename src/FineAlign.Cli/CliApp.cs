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
    private const string MaxLineBytesOption = "--max-line-bytes";
    private const string ReleaseFreedMemoryOption = "--release-freed-memory";

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
        root.Add(ImdbPrepareCommand.Create());
        root.Add(DpoCommand.Create());
        root.Add(KtoCommand.Create());
        root.Add(BcoCommand.Create());
        root.Add(EvalRmCommand.Create());
        root.Add(EvalPrefCommand.Create());
        root.Add(FoldsCommand.Create());
        root.Add(CorpusCommand.Create());
        root.Add(GenerateCommand.Create());
        root.Add(TemplateCommand.Create());
        root.Add(LogprobsCommand.Create());
        root.Add(ConvertCommand.Create());
        root.Add(ExportGgufCommand.Create());
        root.Add(MergeCommand.Create());
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
        root.Add(TokenizeCommand.Create());
        root.Add(TokenizerTrainCommand.CreateGroup());
        root.Add(EvalPolicyCommand.Create());
        root.Add(ServeCommand.Create());
        // Every training command claims its --out before any work (lock, same-command check, resume checks).
        foreach (var cmd in root.Subcommands.OfType<RecipeCommand>())
            if (cmd.Options.Any(o => o.Name == "--out") && cmd.Options.Any(o => o.Name == "--resume"))
                RunFolderGuard.Attach(cmd);
        root.Add(new Option<long?>(MaxLineBytesOption)
        {
            Description = $"Longest accepted JSONL line in bytes (default {FineAlign.Data.JsonlReader.DefaultMaxLineBytes >> 20} MiB; " +
                          $"also {FineAlign.Data.JsonlReader.MaxLineBytesVariable}).",
            Recursive = true,
            HelpName = "bytes",
        });
        // Opt-in, measured both ways (bench/RESULTS.md, issue #15): a 0.5B LoRA DPO step's peak 4.0 → 2.5 GB for ~11 %
        // more step time, but at the 15M shape ~20 % slower for 9 % less memory, so not the default.
        root.Add(new Option<bool>(ReleaseFreedMemoryOption)
        {
            Description = $"Linux/glibc: give freed blocks of ≥ {FineAlign.Models.HostAllocator.DefaultMmapThreshold >> 20} MiB back to the OS at once " +
                          "(lower peak memory for large models, slower steps for small ones; MALLOC_MMAP_THRESHOLD_ wins if set).",
            Recursive = true,
        });
        // Bare `finealign` shows help, like `dotnet`.
        root.SetAction(parseResult => root.Parse(["--help"]).Invoke(parseResult.InvocationConfiguration));
        return root;
    }

    /// <summary>
    /// The process entry point: <see cref="RunAsync"/> with our own SIGINT/SIGTERM handling. The first signal asks the
    /// command to stop (a training run finishes its step and saves a checkpoint); a second one only repeats the note
    /// (it must not crash or cut a checkpoint in half); a third ends the process at once. Exit codes as a shell reports
    /// a signal: 130 for SIGINT, 143 for SIGTERM (128 + the signal number).
    /// </summary>
    public static async Task<int> RunProcessAsync(string[] args)
    {
        using var cts = new CancellationTokenSource();
        int signals = 0, exitCode = 130;
        void OnSignal(System.Runtime.InteropServices.PosixSignalContext context)
        {
            context.Cancel = true;   // no default termination: we stop cleanly
            int n = Interlocked.Increment(ref signals);
            string name = context.Signal == System.Runtime.InteropServices.PosixSignal.SIGTERM ? "SIGTERM" : "Ctrl+C";
            if (n == 1)
            {
                exitCode = context.Signal == System.Runtime.InteropServices.PosixSignal.SIGTERM ? 143 : 130;
                Console.Error.WriteLine($"{name}: stopping after the current step (a training run saves a checkpoint first); signal twice more to abort at once.");
                try { cts.Cancel(); } catch (ObjectDisposedException) { }
            }
            else if (n == 2) Console.Error.WriteLine($"{name}: already stopping; one more to abort without saving.");
            else Environment.Exit(exitCode);
        }
        using var sigint = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, OnSignal);
        using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, OnSignal);
        int code = await RunAsync(args, cancellationToken: cts.Token);
        // A cancelled command returns 130 (or throws OperationCanceledException → 130): report the signal that stopped it.
        return cts.IsCancellationRequested && code == 130 ? exitCode : code;
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
            // Signals are ours (RunProcessAsync): System.CommandLine's handler crashed on a second Ctrl+C, exits 130 for
            // SIGTERM too, and would end the process 2 s after a signal, possibly in the middle of writing a checkpoint.
            ProcessTerminationTimeout = null,
        };
        try
        {
            FineAlign.Data.JsonlReader.MaxLineBytesOverride = parseResult.GetValue<long?>(MaxLineBytesOption);
            if (parseResult.GetValue<bool>(ReleaseFreedMemoryOption)) FineAlign.Models.HostAllocator.ReturnFreedMemory();
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
        // One typo produces several parse errors ("unrecognized '--lerning-rate'", then "unrecognized '1e-4'" for its
        // value): the first names what the user typed; the rest would only repeat it.
        var first = parseResult.Errors[0];
        string message = first.Message;
        var command = parseResult.CommandResult.Command;
        if (parseResult.UnmatchedTokens.FirstOrDefault(t => t.StartsWith('-')) is { } flag && command != root &&
            Recipe.Suggest(flag.TrimStart('-'), command.Options.SelectMany(o => o.Aliases.Append(o.Name)).Select(n => n.TrimStart('-'))) is { } nearFlag)
            message = $"unknown option '{flag}' (did you mean '--{nearFlag}'?)";
        else if (parseResult.UnmatchedTokens.FirstOrDefault(t => t.StartsWith('-')) is { } unknown)
            message = $"unknown option '{unknown}'";
        else if (first.SymbolResult is System.CommandLine.Parsing.OptionResult { Option: var option } &&
                 (Nullable.GetUnderlyingType(option.ValueType) ?? option.ValueType) is { IsEnum: true } enumType)
        {
            // "Cannot parse argument 'foo' … as expected type 'FineAlign.Training.LrSchedulerType'" → the values as typed.
            string given = parseResult.GetResult(option)?.Tokens.LastOrDefault()?.Value ?? "";
            message = $"option {option.Name}: '{given}' is not one of {string.Join(", ", Enum.GetNames(enumType).Select(Recipe.EnumName))}";
        }
        WriteError(error, message);
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
