using System.CommandLine;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Text;
using TorchSharp;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign report RUN_DIR...</c>: the comparison page (Markdown, self-contained HTML, plots, results.json) from
/// finished runs. Runs already evaluated (<c>evaluation.json</c> with the same settings) are read as they are; others
/// are evaluated against <c>--base</c> on the built-in corpus's held-out prompts and the result is cached in the run.
/// </summary>
public static class ReportCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("report",
            "Writes the comparison page (report.md, report.html, reward_vs_step.png, reward_vs_kl.png, results.json) of finished policy runs " +
            "(folders of sft, dpo, kto, bco, alol, ppo, grpo, rloo or finealign demo). A run is evaluated once — its checkpoints and final model: " +
            "reward ± s.e., KL to --base, reward at equal KL (1, 2, 5 nats), the fluency proxy (base-model log-prob per token), distinct-1/2, length; " +
            "on the built-in corpus also the share of corpus words and of well-formed responses — and the numbers are cached in its evaluation.json, " +
            "so a second report is instant. Runs trained on your own data: give --prompts FILE and --reward SPEC (the built-in corpus's ground truth " +
            "is refused for runs not marked as trained on it). Several runs of one method (same folder name under different seed folders) are " +
            "averaged with a 95 % interval. Folders that hold no policy (reward models, discriminators) are skipped.");
        var runs = new Argument<string[]>("runs") { Arity = ArgumentArity.OneOrMore, Description = "Run folders, e.g. runs/demo/runs/sft runs/demo/runs/dpo runs/my-dpo (the base model's own run first gives the Δ reference row)." };
        cmd.Add(runs);
        var outDir = cmd.Declare("--out", "report", "Folder for the report files.", alias: "-o");
        var title = cmd.Declare("--title", "FineAlign comparison", "Title of the page.");
        var flags = EvalFlags.Declare(cmd);
        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var dirs = r.ParseResult.GetValue(runs) ?? [];
            string? baseDir = r.Get(flags.Base);
            var settings = flags.Settings(r, baseDir ?? "");
            var evaluations = EvaluateRuns(r, dirs, baseDir, settings, r.Get(flags.BuiltinCorpus), ct);
            string reproduce = "finealign report " + string.Join(' ', dirs.Select(Quote)) + (baseDir is null ? "" : $" --base {Quote(baseDir)}") +
                               (r.Get(flags.PromptsFile) is string pf ? $" --prompts {Quote(pf)}" : "") +
                               (settings.UsesCorpusTruth ? "" : string.Concat(EvalReward.Split(settings.Reward).Select(x => $" --reward {Quote(x)}"))) +
                               string.Concat(EvalReward.SplitMetrics(settings.Metrics).Select(x => $" --metric {Quote(x)}")) +
                               $" --out {Quote(r.Get(outDir))}";
            string md = ComparisonReport.Write(evaluations, r.Get(outDir), Context(r.Get(title), reproduce, dirs));
            r.Out.Write(ComparisonReport.MarkdownTable(evaluations));
            r.Out.WriteLine($"report: {md}, {Path.Combine(r.Get(outDir), ComparisonReport.HtmlFile)}");
            return 0;
        });
        return cmd;
    }

    /// <summary>The library's <see cref="RunEvaluator.EvaluateRuns"/> with the CLI's model resolution, warnings and progress.</summary>
    internal static List<RunEvaluation> EvaluateRuns(Recipe r, IReadOnlyList<string> dirs, string? baseDir, EvalSettings settings, bool assumeBuiltin, CancellationToken ct)
    {
        string? b = baseDir is null ? null : ModelFolder.Resolve(baseDir, "--base");
        return CliProgress.Run(r.Out, progress =>
            RunEvaluator.EvaluateRuns(dirs, b, settings, assumeBuiltin, w => r.Error.WriteLine("warning: " + w), progress, ct));
    }

    internal static ReportContext Context(string title, string reproduce, IReadOnlyList<string> dirs)
    {
        var infos = dirs.Select(d => (Name: Path.GetFileName(Path.GetFullPath(d)), Info: RunEvaluation.ReadInfo(d))).ToList();
        return new ReportContext
        {
            Title = title,
            ReproduceCommand = reproduce,
            Commands = infos.Select(x => x.Info.Command).Where(c => c.Length > 0).ToList(),
            Timings = infos.Where(x => x.Info.Seconds > 0).Select(x => (x.Name, x.Info.Seconds)).ToList(),
            TensorBoardDir = dirs.Count > 0 ? Path.GetDirectoryName(Path.GetFullPath(dirs[0])) : null,
        };
    }

    internal static string Quote(string s) => s.Length > 0 && s.All(c => char.IsLetterOrDigit(c) || "-_./:=@,+".Contains(c)) ? s : "'" + s.Replace("'", "'\\''") + "'";
}

/// <summary>The evaluation options of <c>report</c> (defaults = the full demo's evaluation).</summary>
internal sealed class EvalFlags
{
    public required Option<string?> Base { get; init; }
    public required Option<int> Prompts { get; init; }
    public required Option<int> Samples { get; init; }
    public required Option<int> MaxNewTokens { get; init; }
    public required Option<long> EvalSeed { get; init; }
    public required Option<int> CorpusSize { get; init; }
    public required Option<int> CorpusSeed { get; init; }
    public required Option<int> Threads { get; init; }
    public required Option<string?> PromptsFile { get; init; }
    public required Option<string[]> Reward { get; init; }
    public required Option<bool> BuiltinCorpus { get; init; }
    public Option<string[]>? Metrics { get; init; }

    public static EvalFlags Declare(RecipeCommand cmd, int prompts = 64, int samples = 1) => new()
    {
        Base = cmd.Declare<string?>("--base", null, "The model the runs started from: KL is measured to it and it is the Δ reference. Needed only for runs not evaluated yet."),
        Prompts = cmd.Declare("--eval-prompts", prompts, "How many evaluation prompts: the first N of --prompts, or of the built-in corpus's held-out prompts.", check: v => v >= 1 ? null : "must be at least 1"),
        PromptsFile = cmd.Declare<string?>("--prompts", null, "JSONL of evaluation prompts ('prompt' per line, or a preference/feedback file's prompts), for runs trained on your data. Omitted: the built-in corpus's held-out prompts."),
        Reward = cmd.Declare<string[]>("--reward", [], "Reward spec(s) the responses are scored with: rm:PATH, tlcr:PATH, discrete:PATH, lexicon, SPEC@WEIGHT (several = weighted sum). Omitted: the built-in corpus's ground truth (only for runs trained on that corpus)."),
        BuiltinCorpus = cmd.Declare("--builtin-corpus", false, "The runs were trained on the built-in corpus (finealign demo marks its runs; say so for runs you trained without --data): allows its ground truth."),
        Samples = cmd.Declare("--eval-samples", samples, "Samples per held-out prompt (T = 1).", check: v => v >= 1 ? null : "must be at least 1"),
        MaxNewTokens = cmd.Declare("--max-new-tokens", 40, "Response length of the evaluation (tokens).", check: v => v >= 1 ? null : "must be at least 1"),
        EvalSeed = cmd.Declare("--eval-seed", 7819L, "Sampling seed of the evaluation (finealign demo uses 7777 + its --seed, 7819 by default)."),
        CorpusSize = cmd.Declare("--corpus-size", 4000, "Reviews of the built-in corpus (its held-out prompts are the evaluation prompts).", check: v => v >= 10 ? null : "must be at least 10"),
        CorpusSeed = cmd.Declare("--corpus-seed", 1234, "Seed of the built-in corpus."),
        Threads = cmd.Declare("--threads", 0, "Torch CPU threads (0 = one per core).", check: v => v >= 0 ? null : "must be ≥ 0"),
        Metrics = cmd.Declare<string[]>("--metric", [], "Extra metric(s), each scored like a reward and shown in its own column: [NAME=]SPEC, e.g. " +
            "afinn=afinn:AFINN-en-165.txt or real_words=known-words:train.jsonl (what demo --task imdb reports)."),
    };

    public EvalSettings Settings(Recipe r, string baseModel)
    {
        var specs = r.Get(Reward) ?? [];
        if (r.Get(PromptsFile) is not null && specs.Length == 0)
            throw new UsageException("--prompts (your data) needs --reward SPEC: the built-in corpus's ground truth means nothing for other prompts");
        return new(r.Get(Prompts), r.Get(Samples), r.Get(MaxNewTokens), r.Get(EvalSeed), r.Get(CorpusSize), r.Get(CorpusSeed), baseModel)
        {
            PromptsFile = r.Get(PromptsFile),
            Reward = specs.Length == 0 ? EvalReward.CorpusTruthSpec : string.Join(EvalReward.Separator, specs),
            Metrics = Metrics is null ? "" : string.Join("; ", r.Get(Metrics) ?? []),
        };
    }

    public void ApplyThreads(Recipe r) { if (r.Get(Threads) > 0) torch.set_num_threads(r.Get(Threads)); }
}
