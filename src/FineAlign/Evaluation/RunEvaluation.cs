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
/// <see cref="Reward"/> is the evaluation's reward (the built-in corpus's ground truth, or the reward spec the
/// evaluation names), <see cref="RewardSe"/> its standard error over the samples; <see cref="Kl"/> is KL(π ‖ π_base)
/// per response in nats; <see cref="BaseLogProb"/> the fluency proxy (mean log π_base per response token). The corpus
/// fluency fields are set only on the built-in corpus.
/// </summary>
public sealed record EvalPoint(double X, double Reward, double RewardSe, double Kl, double Distinct1, double Distinct2, double MeanLength,
    double BaseLogProb = 0, double? CorpusWordShare = null, double? WellFormedShare = null, double? RewardWellFormed = null,
    Dictionary<string, double>? Metrics = null)
{
    public static EvalPoint From(double x, PolicyEvalResult r, double? kl = null) =>
        new(x, r.Reward, r.RewardSe, kl ?? r.Kl, r.Distinct1, r.Distinct2, r.MeanLength, r.BaseLogProbPerToken,
            r.CorpusWordShare, r.WellFormedShare, r.RewardWellFormed, r.MetricLabels is { Count: > 0 } ? r.MetricMeans : null);

    public static double StandardError(IReadOnlyList<double> values)
    {
        if (values.Count < 2) return 0;
        double mean = values.Average();
        double var = values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1);
        return Math.Sqrt(var / values.Count);
    }
}

/// <summary>
/// How a run was made, left in its folder by a pipeline such as <c>finealign demo</c> (<c>run_info.json</c>).
/// <paramref name="Data"/> is <see cref="BuiltinData"/> for runs trained on the built-in corpus: only those may be
/// scored with its ground truth.
/// </summary>
public sealed record RunInfo(string Method, string Signal, string Command, double Seconds, string Data = "", int? Seed = null)
{
    public const string BuiltinData = "builtin";
    public bool TrainedOnBuiltinCorpus => Data == BuiltinData;
}

/// <summary>A held-out response shown in the report.</summary>
public sealed record EvalSample(string Prompt, string Response, double Reward);

/// <summary>
/// How a set of runs was evaluated; two evaluations are comparable (and a cached one reusable) only when equal.
/// <see cref="PromptsFile"/> null: the held-out prompts of the built-in corpus (size, seed); otherwise the first
/// <see cref="Prompts"/> prompts of that file. <see cref="Reward"/>: <see cref="EvalReward.CorpusTruthSpec"/> or a reward spec.
/// </summary>
public sealed record EvalSettings(int Prompts, int SamplesPerPrompt, int MaxNewTokens, long Seed, int CorpusSize, int CorpusSeed, string BaseModel)
{
    public string Reward { get; init; } = EvalReward.CorpusTruthSpec;
    public string? PromptsFile { get; init; }
    /// <summary>Extra metrics, "; "-separated reward specs each reported in its own column (<see cref="EvalReward.BuildMetrics"/>); "" = none.</summary>
    public string Metrics { get; init; } = "";

    /// <summary>Prompts from the built-in corpus: corpus fluency is measured too.</summary>
    [JsonIgnore] public bool OnBuiltinCorpus => PromptsFile is null;
    [JsonIgnore] public bool UsesCorpusTruth => Reward == EvalReward.CorpusTruthSpec;

    /// <summary>The evaluation prompts, each repeated <see cref="SamplesPerPrompt"/> times (prompt-major).</summary>
    public IReadOnlyList<string> PromptList()
    {
        List<string> eval;
        if (PromptsFile is string file)
        {
            eval = Data.PromptReader.Read(file).Take(Prompts).ToList();
            if (eval.Count == 0) throw new FineAlignException($"{file}: no prompts to evaluate on");
        }
        else
        {
            eval = ReviewCorpus.Prompts(CorpusSeed, CorpusSize).Eval.Take(Prompts).ToList();
            if (eval.Count == 0) throw new FineAlignException($"the built-in corpus (size {CorpusSize}, seed {CorpusSeed}) has no held-out prompts");
        }
        return Enumerable.Range(0, SamplesPerPrompt).SelectMany(_ => eval).ToList();
    }

    public PolicyEvalOptions Options(IReadOnlyList<EvalReward>? metrics = null) =>
        new() { MaxNewTokens = MaxNewTokens, Seed = Seed, CorpusFluency = OnBuiltinCorpus, Metrics = metrics ?? [] };

    /// <summary>Equal up to what differs between seeds of one experiment (sampling seed, base model).</summary>
    public bool ComparableTo(EvalSettings other) => this with { Seed = 0, BaseModel = "" } == other with { Seed = 0, BaseModel = "" };
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
    /// <summary>Version of the cached format; older caches are re-evaluated (they lack the fluency fields).</summary>
    public const int CurrentVersion = 2;

    public int Version { get; init; }
    /// <summary>The reward's label in tables ("true reward" or the reward spec).</summary>
    public string RewardLabel { get; init; } = "true reward";
    /// <summary>The run was trained on the built-in corpus (see <see cref="RunInfo.Data"/>).</summary>
    public bool TrainedOnBuiltinCorpus { get; init; }
    /// <summary>Seed of the experiment the run belongs to (several seeds of one method are averaged).</summary>
    public int? Seed { get; init; }

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
        try
        {
            var e = JsonSerializer.Deserialize<RunEvaluation>(File.ReadAllText(path), Json);
            return e is null || e.Version < CurrentVersion ? null : e;
        }
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
    public static RunEvaluation Evaluate(string runDir, CausalLM baseModel, TextTokenizer tokenizer, EvalSettings settings, EvalReward reward,
        EvalPoint? baseEval, int samplesShown = 6, IProgress<ProgressUpdate>? progress = null, CancellationToken ct = default,
        PolicyEvalResult? baseResult = null, IReadOnlyList<EvalReward>? metrics = null)
    {
        if (metrics is null && settings.Metrics.Length > 0) metrics = EvalReward.BuildMetrics(settings.Metrics, tokenizer);
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
            PolicyEvalResult r;
            // The base row: the base model itself (already evaluated when the caller passes its result).
            if (isBase) r = baseResult ?? PolicyEval.Run(baseModel, baseModel, tokenizer, prompts, reward, settings.Options(metrics));
            else
            {
                using var policy = ModelIO.Load(snaps[i].Folder);
                if (policy.Config.VocabSize != baseModel.Config.VocabSize)
                    throw new FineAlignException($"{snaps[i].Folder}: vocabulary {policy.Config.VocabSize} differs from the base model's {baseModel.Config.VocabSize}; KL to the base is undefined");
                r = PolicyEval.Run(policy, baseModel, tokenizer, prompts, reward, settings.Options(metrics));
            }
            curve.Add(EvalPoint.From(snaps[i].Step, r));
            if (i == snaps.Count - 1) samples = Samples(r, samplesShown);
        }
        progress?.Report(new ProgressUpdate(stage, snaps.Count, snaps.Count));
        var info = RunEvaluation.ReadInfo(runDir);
        var result = new RunEvaluation
        {
            Version = RunEvaluation.CurrentVersion, Name = Path.GetFileName(Path.GetFullPath(runDir)), Method = info.Method, Signal = info.Signal,
            Command = info.Command, IsBase = isBase, Settings = settings, Curve = curve, Samples = samples, RewardLabel = reward.Label,
            TrainedOnBuiltinCorpus = info.TrainedOnBuiltinCorpus, Seed = info.Seed,
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
            tb.add_scalar("heldout/reward", (float)p.Reward, (int)p.X);
            tb.add_scalar("heldout/kl_to_base", (float)p.Kl, (int)p.X);
            tb.add_scalar("heldout/base_logprob_per_token", (float)p.BaseLogProb, (int)p.X);
            tb.add_scalar("heldout/distinct_2", (float)p.Distinct2, (int)p.X);
            tb.add_scalar("heldout/mean_length", (float)p.MeanLength, (int)p.X);
            if (p.CorpusWordShare is double c) tb.add_scalar("heldout/corpus_word_share", (float)c, (int)p.X);
            if (p.WellFormedShare is double w) tb.add_scalar("heldout/well_formed_share", (float)w, (int)p.X);
        }
    }

    /// <summary>The base model's own point (KL 0) — x = 0 of every curve and the Δ reference.</summary>
    public static EvalPoint EvaluateBase(CausalLM baseModel, TextTokenizer tokenizer, EvalSettings settings, EvalReward reward) =>
        EvalPoint.From(0, PolicyEval.Run(baseModel, baseModel, tokenizer, settings.PromptList(), reward,
            settings.Options(EvalReward.BuildMetrics(settings.Metrics, tokenizer))));

    /// <summary>
    /// Loads or computes the evaluation of each run folder (what <c>finealign report</c> and <c>demo</c> do). Cached
    /// evaluations are used as they are when <paramref name="baseFolder"/> is null (the report refuses mixed settings),
    /// else only when their settings equal <paramref name="settings"/>; folders holding no policy are skipped with a
    /// warning. The built-in corpus's ground truth is refused for runs not known to be trained on that corpus
    /// (<see cref="RunInfo.Data"/>) unless <paramref name="assumeBuiltinCorpus"/>.
    /// </summary>
    public static List<RunEvaluation> EvaluateRuns(IReadOnlyList<string> dirs, string? baseFolder, EvalSettings settings, bool assumeBuiltinCorpus,
        Action<string> warn, IProgress<ProgressUpdate>? progress = null, CancellationToken ct = default)
    {
        var todo = new List<string>();
        var found = new Dictionary<string, RunEvaluation>();
        foreach (var d in dirs)
        {
            if (!Directory.Exists(d)) throw new FineAlignException($"{d}: no such run folder");
            var cached = RunEvaluation.TryLoad(d);
            // Best-of-n has no model to re-evaluate: its cached curve is used whatever the settings.
            bool usable = cached is not null && (baseFolder is null || cached.Settings == settings || cached.AnalyticKl);
            if (!usable && PolicyFolder(d) is null && Snapshots(d).Count == 0)
            {
                warn($"skipped {d}: no policy model (model/ or policy/ holding a causal LM) and no {RunEvaluation.FileName}");
                continue;
            }
            var evalSettings = usable ? cached!.Settings : settings;
            if (evalSettings.UsesCorpusTruth && !assumeBuiltinCorpus && !RunEvaluation.ReadInfo(d).TrainedOnBuiltinCorpus)
                throw new FineAlignException(
                    $"{d}: not marked as trained on the built-in corpus ({RunEvaluation.InfoFileName} data: {RunInfo.BuiltinData}), so the corpus's " +
                    "ground truth says nothing about it; evaluate it on your data with --prompts FILE --reward SPEC (e.g. rm:PATH), " +
                    "or pass --builtin-corpus if it was trained on the built-in corpus");
            if (usable) { found[d] = cached!; continue; }
            if (baseFolder is null)
                throw new FineAlignException($"{d}: not evaluated yet ({RunEvaluation.FileName} missing or from an older version); pass --base MODEL (the model the runs started from) to evaluate it");
            todo.Add(d);
        }
        if (todo.Count > 0)
        {
            var tokenizer = TokenizerLoader.Load(baseFolder!);
            using var baseModel = ModelIO.Load(baseFolder!);
            var reward = EvalReward.Build(settings.Reward, tokenizer, warn);
            var metrics = EvalReward.BuildMetrics(settings.Metrics, tokenizer, warn);
            var baseResult = PolicyEval.Run(baseModel, baseModel, tokenizer, settings.PromptList(), reward, settings.Options(metrics));
            var basePoint = EvalPoint.From(0, baseResult);
            foreach (var d in todo)
                found[d] = Evaluate(d, baseModel, tokenizer, settings, reward, basePoint, progress: progress, ct: ct, baseResult: baseResult, metrics: metrics);
        }
        var list = dirs.Where(found.ContainsKey).Select(d => found[d]).ToList();
        if (list.Count == 0) throw new FineAlignException("none of the given folders holds a policy run to report");
        return list;
    }

    /// <summary>
    /// Best-of-n with a reward source on the base model (no training), for n in <paramref name="ns"/>: the best of the
    /// first n of max(ns) candidates per prompt, scored with the evaluation's reward. KL is the analytic bound
    /// log n − (n−1)/n (Stiennon et al. 2020, App. G.3).
    /// </summary>
    public static RunEvaluation BestOfNCurve(string name, CausalLM baseModel, TextTokenizer tokenizer, RewardSource ranking,
        EvalSettings settings, EvalReward reward, IReadOnlyList<int> ns, int samplesShown = 6)
    {
        if (ns.Count == 0 || ns.Any(n => n < 1)) throw new FineAlignException("best-of-n needs n values ≥ 1");
        var prompts = settings.PromptList();
        var metrics = EvalReward.BuildMetrics(settings.Metrics, tokenizer);
        int maxN = ns.Max();
        var ranked = BestOfN.Generate(baseModel, tokenizer, prompts, ranking, maxN,
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
            var scores = new List<ResponseScore>();
            for (int s = 0; s < prompts.Count; s += 32)
                scores.AddRange(PolicyEval.Score(null, baseModel, tokenizer, prompts.Skip(s).Take(32).ToList(), picked.Skip(s).Take(32).ToList(),
                    reward, settings.OnBuiltinCorpus, metrics: metrics));
            var result = new PolicyEvalResult(scores, reward.Label, metrics.Select(m => m.Label).ToList());
            curve.Add(EvalPoint.From(n, result, kl: Math.Log(n) - (n - 1.0) / n));
            if (n == ns.Max()) samples = Samples(result, samplesShown);
        }
        return new RunEvaluation
        {
            Version = RunEvaluation.CurrentVersion, Name = name, Method = $"best-of-{maxN}", XAxis = "n", AnalyticKl = true, Settings = settings,
            Curve = curve, Samples = samples, RewardLabel = reward.Label,
        };
    }

    // One sample per distinct prompt, in prompt order.
    private static List<EvalSample> Samples(PolicyEvalResult r, int count)
    {
        var seen = new HashSet<string>();
        var list = new List<EvalSample>();
        foreach (var x in r.Responses)
        {
            if (list.Count >= count) break;
            if (seen.Add(x.Prompt)) list.Add(new EvalSample(x.Prompt, x.Response, x.Reward));
        }
        return list;
    }
}
