using System.Text.Json;
using System.Text.Json.Serialization;
using FineAlign.Trainers;
using FineAlign.Data.Corpus;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Training;

namespace FineAlign.Evaluation;

/// <summary>
/// One evaluated snapshot of a policy on held-out prompts. <see cref="X"/> is the training step (or n for best-of-n);
/// <see cref="TrueReward"/> is the built-in corpus's ground-truth sentiment (mean word valence), <see cref="TrueRewardSe"/>
/// its standard error over the samples; <see cref="Kl"/> is KL(π ‖ π_base) per response in nats.
/// </summary>
public sealed record EvalPoint(double X, double TrueReward, double TrueRewardSe, double Kl, double Distinct1, double Distinct2, double MeanLength)
{
    public static EvalPoint From(double x, SentimentEvalResult r) =>
        new(x, r.TrueReward, StandardError(r.Rewards), r.KlToInitial, r.Distinct1, r.Distinct2, r.MeanLength);

    public static double StandardError(IReadOnlyList<double> values)
    {
        if (values.Count < 2) return 0;
        double mean = values.Average();
        double var = values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1);
        return Math.Sqrt(var / values.Count);
    }
}

/// <summary>How a run was made, left in its folder by a pipeline such as <c>finealign demo</c> (<c>run_info.json</c>).</summary>
public sealed record RunInfo(string Method, string Signal, string Command, double Seconds);

/// <summary>A held-out response shown in the report.</summary>
public sealed record EvalSample(string Prompt, string Response, double TrueReward);

/// <summary>How a set of runs was evaluated; two evaluations are comparable (and a cached one reusable) only when equal.</summary>
public sealed record EvalSettings(int Prompts, int SamplesPerPrompt, int MaxNewTokens, long Seed, int CorpusSize, int CorpusSeed, string BaseModel)
{
    /// <summary>The held-out prompts of the built-in corpus, each repeated <see cref="SamplesPerPrompt"/> times (prompt-major).</summary>
    public IReadOnlyList<string> PromptList()
    {
        var eval = ReviewCorpus.Prompts(CorpusSeed, CorpusSize).Eval.Take(Prompts).ToList();
        if (eval.Count == 0) throw new FineAlignException($"the built-in corpus (size {CorpusSize}, seed {CorpusSeed}) has no held-out prompts");
        return Enumerable.Range(0, SamplesPerPrompt).SelectMany(_ => eval).ToList();
    }
}

/// <summary>
/// The held-out evaluation of one run folder, cached as <c>evaluation.json</c> in that folder: a curve over its
/// checkpoints (starting from the base model at x = 0), the final point, and sample responses.
/// </summary>
public sealed record RunEvaluation
{
    public const string FileName = "evaluation.json";
    /// <summary>Optional description a pipeline (e.g. <c>finealign demo</c>) leaves in a run folder: method, signal, command.</summary>
    public const string InfoFileName = "run_info.json";

    public required string Name { get; init; }
    public string Method { get; init; } = "";
    public string Signal { get; init; } = "";
    public string Command { get; init; } = "";
    /// <summary>"step" for trained policies, "n" for best-of-n.</summary>
    public string XAxis { get; init; } = "step";
    /// <summary>True for the base model itself (the row every Δ is measured against).</summary>
    public bool IsBase { get; init; }
    /// <summary>KL of best-of-n is the analytic bound log n − (n−1)/n, not measured.</summary>
    public bool AnalyticKl { get; init; }
    public required EvalSettings Settings { get; init; }
    public required List<EvalPoint> Curve { get; init; }
    public List<EvalSample> Samples { get; init; } = [];

    [JsonIgnore] public EvalPoint Final => Curve[^1];

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public void Save(string runDir)
    {
        AtomicFile.WriteAllText(Path.Combine(runDir, FileName), JsonSerializer.Serialize(this, Json));
    }

    public static RunEvaluation? TryLoad(string runDir)
    {
        string path = Path.Combine(runDir, FileName);
        if (!File.Exists(path)) return null;
        try { return JsonSerializer.Deserialize<RunEvaluation>(File.ReadAllText(path), Json); }
        catch (JsonException ex) { throw new FineAlignException($"{path}: not a FineAlign evaluation ({ex.Message})", ex); }
    }

    /// <summary>What <see cref="InfoFileName"/> says about a run (empty values when the file is absent).</summary>
    public static RunInfo ReadInfo(string runDir)
    {
        string path = Path.Combine(runDir, InfoFileName);
        if (!File.Exists(path)) return new RunInfo("", "", "", 0);
        try { return JsonSerializer.Deserialize<RunInfo>(File.ReadAllText(path), Json) ?? new RunInfo("", "", "", 0); }
        catch (JsonException ex) { throw new FineAlignException($"{path}: not a FineAlign run description ({ex.Message})", ex); }
    }

    public static void WriteInfo(string runDir, RunInfo info)
    {
        Directory.CreateDirectory(runDir);
        AtomicFile.WriteAllText(Path.Combine(runDir, InfoFileName), JsonSerializer.Serialize(info, Json));
    }
}

/// <summary>Evaluates run folders (checkpoints and final model) against a base model on the corpus's held-out prompts.</summary>
public static class RunEvaluator
{
    /// <summary>The policy folders of a run: (step, folder) for each checkpoint with a model, then the final model.</summary>
    public static List<(long Step, string Folder)> Snapshots(string runDir)
    {
        var list = new List<(long, string)>();
        foreach (var (step, path) in CheckpointStore.List(runDir))
            if (PolicyFolder(path) is string f) list.Add((step, f));
        if (PolicyFolder(runDir) is string final)
        {
            long step = list.Count > 0 ? list[^1].Item1 : LastLoggedStep(runDir);
            if (list.Count > 0 && list[^1].Item1 == step) list[^1] = (step, final); // same weights; prefer the final folder
            else list.Add((step, final));
        }
        return list;
    }

    /// <summary>The Hugging Face causal-LM folder inside a run or checkpoint folder: <c>model/</c> (trainers) or <c>policy/</c> (PPO, GRPO, RLOO).</summary>
    public static string? PolicyFolder(string dir)
    {
        foreach (var name in new[] { "model", "policy" })
        {
            string f = Path.Combine(dir, name);
            if (File.Exists(Path.Combine(f, "config.json")) && !IsScoredModel(f)) return f;
        }
        return null;
    }

    // Reward models and discriminators are saved as *ForSequenceClassification / *ForTokenClassification: not policies.
    private static bool IsScoredModel(string folder)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "config.json")));
        return doc.RootElement.TryGetProperty("architectures", out var a) && a.ValueKind == JsonValueKind.Array &&
               a.EnumerateArray().Any(x => x.GetString() is string s && !s.EndsWith("ForCausalLM", StringComparison.Ordinal));
    }

    private static long LastLoggedStep(string runDir)
    {
        string metrics = Path.Combine(runDir, MetricsLogger.JsonlFile);
        if (!File.Exists(metrics)) return 0;
        var rows = MetricsLogger.Read(metrics);
        return rows.Count > 0 && rows[^1].TryGetValue("step", out var s) ? (long)s : 0;
    }

    /// <summary>
    /// Evaluates every snapshot of <paramref name="runDir"/> (a cached <c>evaluation.json</c> with equal settings is
    /// reused) and saves the result. <paramref name="baseEval"/> is the base model's own point, used as x = 0.
    /// </summary>
    public static RunEvaluation Evaluate(string runDir, CausalLM baseModel, TextTokenizer tokenizer, EvalSettings settings,
        EvalPoint? baseEval, int samplesShown = 6, IProgress<ProgressUpdate>? progress = null, CancellationToken ct = default)
    {
        var cached = RunEvaluation.TryLoad(runDir);
        if (cached is not null && cached.Settings == settings) return cached;

        var snaps = Snapshots(runDir);
        if (snaps.Count == 0)
            throw new FineAlignException($"{runDir}: no policy model (model/ or policy/ with config.json) to evaluate");
        string baseFull = Path.GetFullPath(settings.BaseModel);
        bool isBase = string.Equals(Path.GetFullPath(snaps[^1].Folder), baseFull, StringComparison.Ordinal);
        if (isBase) snaps = [snaps[^1]];   // the base row: only the model itself
        var prompts = settings.PromptList();
        var curve = new List<EvalPoint>();
        if (baseEval is not null && !isBase) curve.Add(baseEval with { X = 0 });
        List<EvalSample> samples = [];
        string stage = $"evaluate {Path.GetFileName(Path.GetFullPath(runDir))}";
        for (int i = 0; i < snaps.Count; i++)
        {
            ct.ThrowIfCancellationRequested();
            progress?.Report(new ProgressUpdate(stage, i, snaps.Count));
            using var policy = ModelIO.Load(snaps[i].Folder);
            if (policy.Config.VocabSize != baseModel.Config.VocabSize)
                throw new FineAlignException($"{snaps[i].Folder}: vocabulary {policy.Config.VocabSize} differs from the base model's {baseModel.Config.VocabSize}; KL to the base is undefined");
            var r = SentimentEval.Run(policy, baseModel, tokenizer, prompts, settings.MaxNewTokens, settings.Seed);
            curve.Add(EvalPoint.From(snaps[i].Step, r));
            if (i == snaps.Count - 1) samples = Samples(prompts, r, samplesShown);
        }
        progress?.Report(new ProgressUpdate(stage, snaps.Count, snaps.Count));
        var info = RunEvaluation.ReadInfo(runDir);
        var result = new RunEvaluation
        {
            Name = Path.GetFileName(Path.GetFullPath(runDir)), Method = info.Method, Signal = info.Signal, Command = info.Command,
            IsBase = isBase, Settings = settings, Curve = curve, Samples = samples,
        };
        result.Save(runDir);
        WriteTensorBoard(runDir, curve);
        return result;
    }

    /// <summary>The held-out curve as TensorBoard scalars (heldout/*) beside the run's training metrics.</summary>
    private static void WriteTensorBoard(string runDir, IReadOnlyList<EvalPoint> curve)
    {
        var tb = TorchSharp.torch.utils.tensorboard.SummaryWriter(Path.Combine(runDir, MetricsLogger.TensorBoardFolder, "heldout"));
        foreach (var p in curve)
        {
            tb.add_scalar("heldout/true_reward", (float)p.TrueReward, (int)p.X);
            tb.add_scalar("heldout/kl_to_base", (float)p.Kl, (int)p.X);
            tb.add_scalar("heldout/distinct_2", (float)p.Distinct2, (int)p.X);
            tb.add_scalar("heldout/mean_length", (float)p.MeanLength, (int)p.X);
        }
    }

    /// <summary>The base model's own point (KL 0) — x = 0 of every curve and the Δ reference.</summary>
    public static EvalPoint EvaluateBase(CausalLM baseModel, TextTokenizer tokenizer, EvalSettings settings) =>
        EvalPoint.From(0, SentimentEval.Run(baseModel, baseModel, tokenizer, settings.PromptList(), settings.MaxNewTokens, settings.Seed));

    /// <summary>
    /// Best-of-n with a reward source on the base model (no training), for n in <paramref name="ns"/>: the best of the
    /// first n of max(ns) candidates per prompt. KL is the analytic bound log n − (n−1)/n (Stiennon et al. 2020, App. G.3).
    /// </summary>
    public static RunEvaluation BestOfNCurve(string name, CausalLM baseModel, TextTokenizer tokenizer, RewardSource reward,
        EvalSettings settings, IReadOnlyList<int> ns, int samplesShown = 6)
    {
        if (ns.Count == 0 || ns.Any(n => n < 1)) throw new FineAlignException("best-of-n needs n values ≥ 1");
        var prompts = settings.PromptList();
        int maxN = ns.Max();
        var ranked = BestOfN.Generate(baseModel, tokenizer, prompts, reward, maxN,
            new GenerationOptions { MaxNewTokens = settings.MaxNewTokens, Temperature = 1.0, Seed = settings.Seed });
        var curve = new List<EvalPoint>();
        List<EvalSample> samples = [];
        foreach (int n in ns.Order())
        {
            var picked = ranked.Select(r =>
            {
                var first = r.CandidateRewards.Take(n).ToArray();
                return r.Candidates[Array.IndexOf(first, first.Max())];
            }).ToList();
            var texts = picked.Select(p => p.Text).ToList();
            var rewards = texts.Select(t => (double)Lexicon.TrueReward(t)).ToList();
            double kl = Math.Log(n) - (n - 1.0) / n;
            var result = new SentimentEvalResult(rewards.Average(), kl, SentimentEval.DistinctN(texts, 1), SentimentEval.DistinctN(texts, 2),
                picked.Average(p => p.Tokens.Length), prompts.Count) { Texts = texts, Rewards = rewards };
            curve.Add(EvalPoint.From(n, result));
            if (n == ns.Max()) samples = Samples(prompts, result, samplesShown);
        }
        return new RunEvaluation
        {
            Name = name, Method = $"best-of-{maxN}", XAxis = "n", AnalyticKl = true, Settings = settings, Curve = curve, Samples = samples,
        };
    }

    // One sample per distinct prompt, in prompt order.
    private static List<EvalSample> Samples(IReadOnlyList<string> prompts, SentimentEvalResult r, int count)
    {
        var seen = new HashSet<string>();
        var list = new List<EvalSample>();
        for (int i = 0; i < prompts.Count && list.Count < count; i++)
            if (seen.Add(prompts[i])) list.Add(new EvalSample(prompts[i], r.Texts[i], r.Rewards[i]));
        return list;
    }
}
