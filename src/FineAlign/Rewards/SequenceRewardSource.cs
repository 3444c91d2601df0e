using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Rewards;

/// <summary>
/// A per-sequence score [B] (e.g. a Bradley–Terry reward model) placed on the last valid response
/// token, zeros elsewhere — the sequence-level PPO baseline. A row without any valid token gets nothing.
/// </summary>
public sealed class SequenceRewardSource : RewardSource
{
    private readonly Func<RewardBatch, Tensor> _score;

    /// <param name="score">Returns one score per row, [B].</param>
    public SequenceRewardSource(string name, Func<RewardBatch, Tensor> score) : base(name) => _score = score;

    protected override Tensor ComputeValues(RewardBatch batch)
    {
        var scores = _score(batch);
        if (scores.dim() != 1 || scores.shape[0] != batch.BatchSize)
            throw new FineAlignException($"reward source '{Name}' returned scores [{string.Join(", ", scores.shape)}], expected [{batch.BatchSize}]");
        CheckFinite(Name, scores);
        return PlaceOnLastToken(scores, batch.ResponseMask);
    }

    /// <summary>[B] → [B, T]: scores[b] at the last position where mask[b] is set (any padding side), 0 elsewhere.</summary>
    public static Tensor PlaceOnLastToken(Tensor scores, Tensor mask)
    {
        if (mask.dim() != 2 || scores.dim() != 1 || scores.shape[0] != mask.shape[0])
            throw new FineAlignException($"scores [{string.Join(", ", scores.shape)}] do not match mask [{string.Join(", ", mask.shape)}]");
        using var scope = NewDisposeScope();
        var m = mask.detach().to(float32);
        long t = m.shape[1];
        // Position index + 1 on valid tokens, 0 elsewhere: the row maximum marks the last valid token.
        var pos = arange(1, t + 1, dtype: float32, device: m.device).unsqueeze(0) * m;
        var last = pos.argmax(1, keepdim: true);
        var hasAny = m.sum(1, keepdim: true).gt(0).to(float32);
        var placed = zeros_like(m).scatter(1, last, scores.to(float32).unsqueeze(1).masked_fill(hasAny.eq(0), 0));
        return placed.MoveToOuterDisposeScope();
    }

    /// <summary>Index of the last valid token per row, [B] int64; −1 for rows with no valid token.</summary>
    public static Tensor LastTokenIndex(Tensor mask)
    {
        using var scope = NewDisposeScope();
        var m = mask.detach().to(float32);
        var pos = arange(1, m.shape[1] + 1, dtype: float32, device: m.device).unsqueeze(0) * m;
        return (pos.max(1).values.to(int64) - 1).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Per-token labels {+1, −1, 0} used directly as rewards — the discrete token-reward baseline of
/// TLCR (Yoon et al. 2024): +1 positive, −1 negative, 0 neutral.
/// </summary>
public sealed class DiscreteTokenRewardSource : RewardSource
{
    private readonly Func<RewardBatch, Tensor> _labels;

    /// <param name="labels">Returns [B, T] labels in {−1, 0, +1} (any numeric dtype).</param>
    public DiscreteTokenRewardSource(string name, Func<RewardBatch, Tensor> labels) : base(name) => _labels = labels;

    protected override Tensor ComputeValues(RewardBatch batch)
    {
        var labels = _labels(batch).to(float32);
        if (!labels.shape.SequenceEqual(batch.ResponseMask.shape))
            throw new FineAlignException($"reward source '{Name}' returned labels [{string.Join(", ", labels.shape)}], expected [{string.Join(", ", batch.ResponseMask.shape)}]");
        using var scope = NewDisposeScope();
        var valid = batch.ResponseMask.to(ScalarType.Bool);
        var bad = labels.eq(1).logical_or(labels.eq(-1)).logical_or(labels.eq(0)).logical_not().logical_and(valid).any(1).nonzero();
        if (bad.shape[0] > 0)
            throw new FineAlignException($"reward source '{Name}': token labels must be +1, -1 or 0 (batch index {bad[0, 0].item<long>()})");
        return labels;
    }
}

/// <summary>
/// A C# delegate as a reward, per sequence (score lands on the last valid token) or per token.
/// The delegate sees one example at a time with only its valid response tokens.
/// </summary>
public sealed class ProgrammaticRewardSource : RewardSource
{
    private readonly Func<RewardExample, double>? _sequence;
    private readonly Func<RewardExample, IReadOnlyList<float>>? _token;

    private readonly IReadOnlyList<string> _columns;

    private ProgrammaticRewardSource(string name, Func<RewardExample, double>? sequence, Func<RewardExample, IReadOnlyList<float>>? token,
        IReadOnlyList<string>? columns = null)
        : base(name) { _sequence = sequence; _token = token; _columns = columns ?? []; }

    public override IReadOnlyList<string> Columns => _columns;

    /// <summary>
    /// One score per response, e.g. a length penalty or an exact-match check; <paramref name="columns"/> are the dataset
    /// columns it reads (<see cref="RewardExample.Columns"/>), each row must have them.
    /// </summary>
    public static ProgrammaticRewardSource Sequence(string name, Func<RewardExample, double> score, IReadOnlyList<string>? columns = null) =>
        new(name, score, null, columns);

    /// <summary>One reward per valid response token; the list must have exactly that many entries.</summary>
    public static ProgrammaticRewardSource Token(string name, Func<RewardExample, IReadOnlyList<float>> rewards) => new(name, null, rewards);

    protected override Tensor ComputeValues(RewardBatch batch)
    {
        long b = batch.BatchSize, t = batch.Time;
        var ids = batch.ResponseIds.to(int64).cpu().contiguous().data<long>().ToArray();
        var mask = batch.ResponseMask.to(ScalarType.Bool).cpu().contiguous().data<bool>().ToArray();
        var output = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            var positions = new List<int>();
            for (int j = 0; j < t; j++) if (mask[i * t + j]) positions.Add(j);
            foreach (var c in _columns) ColumnValue(batch, i, c);   // a missing column is an error naming it and the row
            var example = new RewardExample(i, positions.Select(j => ids[i * t + j]).ToArray(),
                batch.PromptTexts?[i], batch.ResponseTexts?[i], batch.Columns?[i]);
            if (_sequence is not null)
            {
                double s = _sequence(example);
                if (!double.IsFinite(s)) throw new FineAlignException($"reward source '{Name}' produced NaN or Inf at batch index {i}");
                if (positions.Count > 0) output[i * t + positions[^1]] = (float)s;
            }
            else
            {
                var r = _token!(example);
                if (r.Count != positions.Count)
                    throw new FineAlignException($"reward source '{Name}' returned {r.Count} token rewards for batch index {i}, which has {positions.Count} response tokens");
                for (int k = 0; k < r.Count; k++) output[i * t + positions[k]] = r[k];
            }
        }
        return tensor(output, new long[] { b, t }).to(batch.ResponseIds.device);
    }
}

/// <summary>One response as a programmatic reward sees it: its valid token ids and, if known, the texts and its prompt row's dataset columns.</summary>
public sealed record RewardExample(int Index, long[] ResponseIds, string? PromptText, string? ResponseText,
    IReadOnlyDictionary<string, string>? Columns = null);

/// <summary>
/// Σ_k w_k · source_k. Every component's own <c>rewards/&lt;name&gt;</c> (unweighted) is logged next to
/// the sum's; component names must be distinct.
/// </summary>
public sealed class WeightedRewardSum : RewardSource
{
    private readonly (RewardSource Source, double Weight)[] _parts;
    private Dictionary<string, double> _componentMetrics = new();

    public WeightedRewardSum(string name, params (RewardSource Source, double Weight)[] parts) : base(name)
    {
        if (parts.Length == 0) throw new FineAlignException($"weighted reward '{name}' needs at least one component");
        var names = parts.Select(p => p.Source.Name).Append(name).ToList();
        var dup = names.GroupBy(n => n).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new FineAlignException($"weighted reward '{name}': reward source name '{dup.Key}' is used twice");
        foreach (var p in parts)
            if (!double.IsFinite(p.Weight)) throw new FineAlignException($"weighted reward '{name}': weight of '{p.Source.Name}' is not finite");
        _parts = parts;
    }

    public IReadOnlyList<(RewardSource Source, double Weight)> Parts => _parts;
    public override IReadOnlyList<string> Columns => _parts.SelectMany(p => p.Source.Columns).Distinct().ToList();
    public override string? ColumnProblem(string column, string value) => _parts.Select(p => p.Source.ColumnProblem(column, value)).FirstOrDefault(x => x is not null);

    protected override Tensor ComputeValues(RewardBatch batch)
    {
        var metrics = new Dictionary<string, double>();
        Tensor? total = null;
        foreach (var (source, weight) in _parts)
        {
            using var part = source.Compute(batch); // checks NaN/Inf and names the component
            foreach (var kv in part.Metrics) metrics[kv.Key] = kv.Value;
            var term = part.Values * weight;
            total = total is null ? term : total + term;
        }
        _componentMetrics = metrics;
        return total!;
    }

    protected override void AddMetrics(Dictionary<string, double> metrics, Tensor values, Tensor mask)
    {
        foreach (var kv in _componentMetrics) metrics[kv.Key] = kv.Value;
        base.AddMetrics(metrics, values, mask);
    }
}

/// <summary>
/// The one place where the KL penalty meets the task reward: r_t = s_t − β·kl_t on valid tokens, 0 on padding.
/// PPO, REINFORCE++ and RLOO all go through here.
/// </summary>
public static class KlShaping
{
    public static Tensor Apply(Tensor taskRewards, Tensor kl, double beta, Tensor mask)
    {
        if (taskRewards.dim() != 2 || !taskRewards.shape.SequenceEqual(kl.shape) || !taskRewards.shape.SequenceEqual(mask.shape))
            throw new FineAlignException($"task rewards [{string.Join(", ", taskRewards.shape)}], KL [{string.Join(", ", kl.shape)}] and mask [{string.Join(", ", mask.shape)}] must all be the same [batch, time]");
        using var scope = NewDisposeScope();
        var m = mask.detach().to(float32);
        var pad = m.eq(0); // zero padding before the arithmetic so garbage there cannot become NaN
        var r = (taskRewards.detach().to(float32).masked_fill(pad, 0) - beta * kl.detach().to(float32).masked_fill(pad, 0)).masked_fill(pad, 0);
        return r.MoveToOuterDisposeScope();
    }

    /// <summary>Same as the tensor overload; returns new rewards (the input is left as is) with the same metrics.</summary>
    public static TokenRewards Apply(TokenRewards task, Tensor kl, double beta)
        => new(Apply(task.Values, kl, beta, task.Mask), task.Mask.clone(), task.Metrics);
}
