using static TorchSharp.torch;

namespace FineAlign.Rewards;

/// <summary>
/// Per-component reward normalisation (<c>--reward-normalize</c>, <c>--reward-clip</c>), after TRL's PPOConfig
/// <c>use_score_scaling</c> + <c>use_score_norm</c> and <c>score_clip</c>: each reward component is whitened with running
/// statistics of its own per-response totals, then clipped to [−clip, clip].
/// </summary>
public sealed record RewardNormalization
{
    /// <summary>Whiten each component: (r − μ) / (σ + ε) with running μ, σ over every response seen so far.</summary>
    public bool Whiten { get; init; }
    /// <summary>Clip each component's token rewards to [−Clip, Clip] after whitening; null = no clip.</summary>
    public double? Clip { get; init; }

    public bool Active => Whiten || Clip is not null;

    public void Validate()
    {
        if (Clip is double c && !(c > 0 && double.IsFinite(c))) throw new FineAlignException($"--reward-clip must be a positive number (got {c})");
    }

    /// <summary>The sources of <paramref name="reward"/> that keep running statistics (the reward itself or the components of a sum).</summary>
    public static IReadOnlyList<NormalizedRewardSource> Normalizers(RewardSource reward) => reward switch
    {
        NormalizedRewardSource n => [n],
        WeightedRewardSum sum => sum.Parts.SelectMany(p => Normalizers(p.Source)).ToList(),
        _ => [],
    };

    /// <summary>The running statistics to checkpoint, by component name (null when nothing is normalised).</summary>
    public static Dictionary<string, RunningMomentsState>? Save(RewardSource reward)
    {
        var list = Normalizers(reward).Where(n => n.Moments is not null).ToList();
        return list.Count == 0 ? null : list.ToDictionary(n => n.Name, n => n.Moments!.State);
    }

    /// <summary>Restores <see cref="Save"/>'s statistics on resume; a checkpoint of another normalisation setting is refused (the run would not be the same).</summary>
    public static void Restore(RewardSource reward, IReadOnlyDictionary<string, RunningMomentsState>? saved, string checkpoint)
    {
        var live = Normalizers(reward).Where(n => n.Moments is not null).ToList();
        saved ??= new Dictionary<string, RunningMomentsState>();
        var want = live.Select(n => n.Name).Order().ToList();
        var have = saved.Keys.Order().ToList();
        if (!want.SequenceEqual(have))
            throw new FineAlignException($"{checkpoint} holds reward statistics for [{string.Join(", ", have)}] but this run normalises [{string.Join(", ", want)}]; " +
                                         "resume with the same --reward and --reward-normalize");
        foreach (var n in live) n.Moments!.State = saved[n.Name];
    }
}

/// <summary>Count, mean and Σ(x − mean)² of the values seen so far (what a checkpoint stores).</summary>
public sealed record RunningMomentsState(long Count, double Mean, double M2);

/// <summary>
/// Running mean and standard deviation, updated one batch at a time with the exact pairwise combination of
/// Chan, Golub &amp; LeVeque (1979) — the update of TRL's RunningMoments, kept in float64 without TRL's 1e-24 prior.
/// σ is the sample (n − 1) standard deviation; with fewer than two values it is 1 (no scaling yet).
/// </summary>
public sealed class RunningMoments
{
    public RunningMomentsState State { get; set; } = new(0, 0, 0);
    public long Count => State.Count;
    public double Mean => State.Mean;
    public double Std => State.Count > 1 ? Math.Sqrt(State.M2 / (State.Count - 1)) : 1.0;

    public void Update(IReadOnlyList<double> xs)
    {
        if (xs.Count == 0) return;
        double mb = xs.Average(), m2b = xs.Sum(x => (x - mb) * (x - mb));
        long na = State.Count, nb = xs.Count, n = na + nb;
        double delta = mb - State.Mean;
        State = new RunningMomentsState(n, State.Mean + delta * nb / n, State.M2 + m2b + delta * delta * na * nb / n);
    }
}

/// <summary>
/// One reward component, normalised. Statistics are over each response's total Σ_t r_t (for a sequence reward: its
/// score). Whitening scales every token reward by 1/(σ + ε) and subtracts μ/(σ + ε) on the last valid token, so the
/// total becomes (Σ_t r_t − μ)/(σ + ε) and a token reward's shape is kept. The statistics are updated with the batch
/// <b>before</b> they are used on it (TRL's order): the first batch is whitened by its own mean and σ instead of an
/// undefined or arbitrary prior, and each batch's rewards count in the estimate that scales them. Clipping then bounds
/// every token reward to [−clip, clip] (for a sequence reward: the score). Logged: <c>rewards/&lt;name&gt;</c> (raw, as
/// without normalisation), <c>rewards/&lt;name&gt;_mean</c> and <c>_std</c> (running, after this batch) and
/// <c>rewards/&lt;name&gt;_normalized</c> (batch mean of the normalised totals).
/// </summary>
public sealed class NormalizedRewardSource : RewardSource
{
    /// <summary>ε added to σ (as TRL adds the dtype's eps).</summary>
    public const double Epsilon = 1e-8;
    private readonly RewardSource _inner;
    private readonly double? _clip;
    private Dictionary<string, double> _metrics = new();

    public NormalizedRewardSource(RewardSource inner, RewardNormalization settings) : base(inner.Name)
    {
        settings.Validate();
        _inner = inner;
        _clip = settings.Clip;
        Moments = settings.Whiten ? new RunningMoments() : null;
    }

    /// <summary>Null when only clipping.</summary>
    public RunningMoments? Moments { get; }
    public RewardSource Inner => _inner;
    public override IReadOnlyList<string> Columns => _inner.Columns;
    public override string? ColumnProblem(string column, string value) => _inner.ColumnProblem(column, value);

    protected override Tensor ComputeValues(RewardBatch batch)
    {
        using var part = _inner.Compute(batch);
        var metrics = new Dictionary<string, double>(part.Metrics);
        var values = part.Values.clone();
        if (Moments is not null)
        {
            var totals = part.SequenceTotals().to(ScalarType.Float64).data<double>().ToArray();
            var valid = part.Mask.sum(1).data<float>().ToArray();
            Moments.Update(totals.Where((_, i) => valid[i] > 0).ToList());   // before use: see the class comment
            double scale = 1.0 / (Moments.Std + Epsilon), shift = Moments.Mean * scale;
            var lastToken = SequenceRewardSource.PlaceOnLastToken(full(new long[] { part.BatchSize }, (float)shift), part.Mask);
            values = values * scale - lastToken;
            metrics[$"rewards/{Name}_mean"] = Moments.Mean;
            metrics[$"rewards/{Name}_std"] = Moments.Std;
        }
        if (_clip is double c) values = values.clamp(-c, c);
        metrics[$"rewards/{Name}_normalized"] = part.BatchSize == 0 ? 0 : (values * part.Mask).sum(1).mean().item<float>();
        _metrics = metrics;
        return values;
    }

    protected override void AddMetrics(Dictionary<string, double> metrics, Tensor values, Tensor mask)
    {
        foreach (var kv in _metrics) metrics[kv.Key] = kv.Value;
    }
}
