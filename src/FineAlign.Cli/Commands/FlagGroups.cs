using System.CommandLine;
using FineAlign.Data.Corpus;
using FineAlign.Generation;
using FineAlign.Rewards;
using FineAlign.Text;
using TorchSharp;

namespace FineAlign.Cli.Commands;

/// <summary>Seeds the CLI derives from a user's seed, named once.</summary>
internal static class Seeds
{
    /// <summary>Held-out evaluations sample with the run's --seed + this, so evaluation never replays training's stream.</summary>
    public const long HeldOutEvalOffset = 7777;
}

/// <summary>Checks shared by the flag groups.</summary>
internal static class Checks
{
    public static Func<int, string?> AtLeast(int min) => v => v >= min ? null : $"must be at least {min}";
    public static readonly Func<double, string?> Positive = v => v > 0 && double.IsFinite(v) ? null : "must be a positive number";
    public static readonly Func<double, string?> NonNegative = v => v >= 0 && double.IsFinite(v) ? null : "must be ≥ 0";
}

/// <summary>Runtime flags of every command: --threads (and the commands' --seed where they sample or shuffle).</summary>
internal sealed class RuntimeFlags
{
    public required Option<int> Threads { get; init; }

    public static RuntimeFlags Declare(RecipeCommand cmd) => new()
    {
        Threads = cmd.Declare("--threads", 0, "Torch CPU threads (0 = one per core).", check: Checks.AtLeast(0)),
    };

    /// <summary>Sets torch's thread count when --threads was given a positive value.</summary>
    public void Apply(Recipe r) { if (r.Get(Threads) > 0) torch.set_num_threads(r.Get(Threads)); }
}

/// <summary>The built-in review corpus: --corpus-size and --corpus-seed.</summary>
internal sealed class CorpusFlags
{
    public required Option<int> Size { get; init; }
    public required Option<int> Seed { get; init; }

    public static CorpusFlags Declare(RecipeCommand cmd, string sizeDescription, int defaultSize = 4000, int minSize = 10) => new()
    {
        Size = cmd.Declare("--corpus-size", defaultSize, sizeDescription, check: Checks.AtLeast(minSize)),
        Seed = cmd.Declare("--corpus-seed", ReviewCorpus.DefaultSeed, "Seed of the built-in corpus (kept apart from --seed so runs with different seeds see the same data)."),
    };
}

/// <summary>Sampling of responses: --max-new-tokens, --temperature, --top-p.</summary>
internal sealed class SamplingFlags
{
    public required Option<int> MaxNewTokens { get; init; }
    public required Option<double> Temperature { get; init; }
    public required Option<double> TopP { get; init; }

    public static SamplingFlags Declare(RecipeCommand cmd, int defaultMaxNewTokens = 64) => new()
    {
        MaxNewTokens = cmd.Declare("--max-new-tokens", defaultMaxNewTokens, "Response length limit (tokens).", check: Checks.AtLeast(1)),
        Temperature = cmd.Declare("--temperature", 1.0, "Sampling temperature (log-probs use the same).", check: Checks.Positive),
        TopP = cmd.Declare("--top-p", 1.0, "Nucleus sampling.", check: v => v is > 0 and <= 1 ? null : "must be in (0, 1]"),
    };
}

/// <summary>Reward sources: --reward SPEC (repeatable) and the options of the token-level sources.</summary>
internal sealed class RewardFlags
{
    public const string SpecHelp = "lexicon | lexicon:token | rm:PATH | tlcr:PATH | discrete:PATH | pivot:SPEC | http://URL (OpenRLHF remote reward model) | http-token:http://URL (per-token rewards) | judge:URL (LLM-as-judge with --judge-rubric) | exact-match:COLUMN / numeric:COLUMN (1 when the response matches the --prompts row's COLUMN, e.g. 'solution'; numeric compares the answer number, after '####' or the last one), each optionally @WEIGHT (several = weighted sum, each logged)";

    public required Option<string[]> Specs { get; init; }
    public required Option<bool> Retokenize { get; init; }
    public required Option<TlcrMapping> Mapping { get; init; }
    public required Option<int> PivotWindow { get; init; }
    public required Option<int> PivotMinLength { get; init; }
    public required Option<string?> JudgeRubric { get; init; }
    public required Option<string> JudgeModel { get; init; }
    public required Option<bool> Normalize { get; init; }
    public required Option<double?> Clip { get; init; }
    public required Option<string?> LabelKey { get; init; }

    /// <summary>--retokenize alone, for commands that take reward specs without the whole group (bon, alol).</summary>
    public static Option<bool> DeclareRetokenize(RecipeCommand cmd) =>
        cmd.Declare("--retokenize", false, "Allow a sequence reward model with another tokenizer: decode responses and re-tokenise (with a warning).");

    public static RewardFlags Declare(RecipeCommand cmd) => new()
    {
        Specs = cmd.Declare<string[]>("--reward", ["lexicon"], "Reward source spec (repeatable): " + SpecHelp + "."),
        Retokenize = DeclareRetokenize(cmd),
        Mapping = cmd.Declare("--tlcr-mapping", TlcrMapping.Paper, "TLCR probability → reward: paper (2p−1), code (tanh(p−½)) or discrete."),
        PivotWindow = cmd.Declare("--pivot-window", 1, "Smoothing window before pivot detection (pivot rewards).", check: Checks.AtLeast(1)),
        PivotMinLength = cmd.Declare("--pivot-min-length", 1, "Minimum pivot segment length.", check: Checks.AtLeast(1)),
        JudgeRubric = cmd.Declare<string?>("--judge-rubric", null, "judge:URL rewards: a text file with {prompt} and {response}, asking for 'Score: N'."),
        JudgeModel = cmd.Declare("--judge-model", "", "judge:URL rewards: the judge server's model name (empty: its only model)."),
        Normalize = cmd.Declare("--reward-normalize", false, "Whiten each --reward component with running statistics of its per-response totals: (r − mean) / std, updated with each batch before use (TRL use_score_norm); logged as rewards/<name>_mean, _std, _normalized; checkpointed."),
        LabelKey = cmd.Declare<string?>("--label-key", null, "http:// rewards: send this --prompts column as OpenRLHF's \"labels\" (its --label_key; e.g. the reference answer)."),
        Clip = cmd.Declare<double?>("--reward-clip", null, "Clip each --reward component's (normalised) token rewards to [−C, C] (TRL score_clip).", check: v => v is null or > 0 ? null : "must be positive"),
    };

    /// <summary>The weighted sum of <paramref name="specs"/> (the --reward values when null).</summary>
    public RewardSource Build(Recipe r, TextTokenizer tokenizer, IReadOnlyList<string>? specs = null) =>
        RewardSpecs.Build(specs ?? r.Get(Specs), tokenizer, r.Get(Retokenize), m => r.Error.WriteLine("warning: " + m),
            new TlcrOptions { Mapping = r.Get(Mapping) },
            new PivotOptions { SmoothingWindow = r.Get(PivotWindow), MinSegmentLength = r.Get(PivotMinLength) },
            new JudgeOptions { RubricPath = r.Get(JudgeRubric), Model = r.Get(JudgeModel) },
            new RewardNormalization { Whiten = r.Get(Normalize), Clip = r.Get(Clip) }, r.Get(LabelKey));
}

/// <summary>The run folder and its checkpoints: --out, --save-steps, --save-total-limit, --resume.</summary>
internal sealed class OutputFlags
{
    public required Option<string> Out { get; init; }
    public required Option<int> SaveSteps { get; init; }
    public required Option<int?> SaveTotalLimit { get; init; }
    public required Option<bool> Resume { get; init; }

    public static OutputFlags Declare(RecipeCommand cmd, string defaultOut, string unit) => new()
    {
        Out = cmd.Declare("--out", defaultOut, "Output folder: checkpoints, metrics.jsonl, TensorBoard runs/ and the final model in model/.", alias: "-o"),
        SaveSteps = cmd.Declare("--save-steps", 0, $"Checkpoint every N {unit} (and at the end).", check: Checks.AtLeast(0)),
        SaveTotalLimit = cmd.Declare<int?>("--save-total-limit", 2, "Keep at most this many checkpoints (oldest removed).", check: v => v is null or >= 1 ? null : "must be at least 1"),
        Resume = cmd.Declare("--resume", false, "Continue from the latest checkpoint in --out."),
    };
}

/// <summary>
/// Generation on OpenAI-compatible servers: --rollout-endpoint URL (repeatable), --rollout-model, --rollout-api-key-env,
/// --rollout-sync full|none, --rollout-sync-dir, --rollout-timeout, --rollout-concurrency.
/// </summary>
internal sealed class RolloutFlags
{
    public required Option<string[]> Endpoints { get; init; }
    public required Option<string?> Model { get; init; }
    public required Option<string?> ApiKeyEnv { get; init; }
    /// <summary>Null on commands that only sample (bon, eval-policy): there is no update to sync.</summary>
    public Option<string>? Sync { get; init; }
    public Option<string?>? SyncDir { get; init; }
    public required Option<double> Timeout { get; init; }
    public required Option<int> Concurrency { get; init; }
    public required Option<string> Seed { get; init; }
    /// <summary>Training commands only: the dtype in-process rollouts sample in.</summary>
    public Option<string>? Dtype { get; init; }

    /// <param name="withSync">Training commands: also --rollout-sync and --rollout-sync-dir.</param>
    public static RolloutFlags Declare(RecipeCommand cmd, bool withSync = true) => new()
    {
        Endpoints = cmd.Declare<string[]>("--rollout-endpoint", [], "Generate on this OpenAI-compatible server (vLLM, SGLang, finealign serve) instead of in-process; repeat for several (round robin, a failing one is skipped). " +
            (withSync ? "" : "The servers must serve the model named by --model (this command sends no weights). ") + "See docs/SCALING.md."),
        Model = cmd.Declare<string?>("--rollout-model", null, "The model name the rollout servers serve (their --served-model-name)."),
        ApiKeyEnv = cmd.Declare<string?>("--rollout-api-key-env", null, "Environment variable holding the rollout servers' API key (sent as a Bearer token)."),
        Sync = !withSync ? null : cmd.Declare("--rollout-sync", "none", "Weight sync after each update: full (write the policy to --rollout-sync-dir and POST /v1/reload_weights, finealign serve) lora (a --use-peft run: write the adapter and POST /v1/load_lora_adapter, vLLM or finealign serve, sampling from '<model>-policy') or none (servers keep their weights; the importance ratio corrects the lag).",
            check: v => v is "full" or "none" or "lora" ? null : "must be full, lora or none"),
        SyncDir = !withSync ? null : cmd.Declare<string?>("--rollout-sync-dir", null, "Folder every rollout server can read, for --rollout-sync full (default: <out>/rollout-weights)."),
        Timeout = cmd.Declare("--rollout-timeout", 120.0, "Seconds before a rollout request is retried.", check: Checks.Positive),
        Concurrency = cmd.Declare("--rollout-concurrency", 2, "Rollout requests in flight per endpoint.", check: Checks.AtLeast(1)),
        Dtype = !withSync ? null : cmd.Declare("--rollout-dtype", "auto", $"In-process rollouts sample from a copy of the policy in this dtype ({ModelFolder.DTypeNames}; auto = the policy's own), refreshed after every update: bfloat16 halves the bytes each decode step streams. " +
            "Scoring and the update stay in the policy's dtype, so the log-probs PPO uses are unchanged (verl's rollout.dtype; docs/DECODING.md).",
            check: v => v == "auto" ? null : ModelFolder.CheckDType(v)),
        Seed = cmd.Declare("--rollout-seed", "per-prompt", "per-prompt: each request carries seed (run seed, step) + prompt index, so samples are reproducible whichever server answers; none: unseeded requests, which finealign serve can batch together (it decodes a seeded request alone) — faster, not reproducible.",
            check: v => v is "per-prompt" or "none" ? null : "must be per-prompt or none"),
    };

    /// <summary>The remote engine, or null when no --rollout-endpoint was given.</summary>
    public RemoteRolloutEngine? Build(Recipe r, string outputDir)
    {
        var urls = r.Get(Endpoints);
        if (urls.Length == 0)
        {
            if (SyncMode(r) != "none") throw new FineAlignException($"--rollout-sync {SyncMode(r)} needs --rollout-endpoint");
            return null;
        }
        string model = r.Get(Model) ?? throw new FineAlignException("--rollout-endpoint needs --rollout-model (the servers' model name)");
        string? key = null;
        if (r.Get(ApiKeyEnv) is string env)
            key = Environment.GetEnvironmentVariable(env) is { Length: > 0 } k ? k
                : throw new FineAlignException($"--rollout-api-key-env {env}: the environment variable is not set");
        var uris = urls.Select(u => Uri.TryCreate(u, UriKind.Absolute, out var x) ? x : throw new FineAlignException($"--rollout-endpoint '{u}' is not a URL")).ToList();
        return new RemoteRolloutEngine(new RemoteRolloutOptions
        {
            Endpoints = uris, Model = model, ApiKey = key, Timeout = TimeSpan.FromSeconds(r.Get(Timeout)), MaxConcurrency = r.Get(Concurrency),
            Seeded = r.Get(Seed) == "per-prompt",
            SyncDir = (SyncDir is null ? null : r.Get(SyncDir)) ?? Path.Combine(outputDir, "rollout-weights"), LoraName = SyncMode(r) == "lora" ? model + "-policy" : null,
        }, m => r.Error.WriteLine("warning: " + m));
    }

    public bool SyncFull(Recipe r) => SyncMode(r) != "none";

    /// <summary>The in-process rollout engine over <paramref name="policy"/> in --rollout-dtype (auto: the policy's dtype).</summary>
    public LocalRolloutEngine Local(Recipe r, FineAlign.Models.CausalLM policy, TextTokenizer tokenizer)
    {
        string name = Dtype is null ? "auto" : r.Get(Dtype);
        if (name != "auto" && r.Get(Endpoints).Length > 0) throw new FineAlignException("--rollout-dtype sets the in-process sampler; rollout servers keep their own dtype (drop --rollout-endpoint or --rollout-dtype)");
        return new LocalRolloutEngine(policy, tokenizer, name == "auto" ? null : ModelFolder.ParseDType(name));
    }

    /// <summary>full, lora or none (always none on commands without --rollout-sync).</summary>
    public string SyncMode(Recipe r) => Sync is null ? "none" : r.Get(Sync);
}
