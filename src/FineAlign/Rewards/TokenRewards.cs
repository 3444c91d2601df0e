using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Rewards;

/// <summary>
/// The reward contract every RL trainer consumes: <see cref="Values"/> [B, T] float32, one reward per
/// response token (0 on padding), with the response <see cref="Mask"/> [B, T] float32 (1 = valid token).
/// A sequence-level score is just a tensor that is zero except on the last valid token.
/// <see cref="Metrics"/> holds the numbers to log for this batch (e.g. <c>rewards/&lt;name&gt;</c>).
/// </summary>
public sealed class TokenRewards : IDisposable
{
    public TokenRewards(Tensor values, Tensor mask, IReadOnlyDictionary<string, double>? metrics = null)
    {
        if (values.dim() != 2 || !values.shape.SequenceEqual(mask.shape))
            throw new FineAlignException($"token rewards [{string.Join(", ", values.shape)}] and mask [{string.Join(", ", mask.shape)}] must both be [batch, time]");
        Values = values;
        Mask = mask;
        Metrics = metrics ?? new Dictionary<string, double>();
    }

    public Tensor Values { get; }
    public Tensor Mask { get; }
    public IReadOnlyDictionary<string, double> Metrics { get; }
    public long BatchSize => Values.shape[0];

    /// <summary>Σ_t r_t per sequence, [B] (what GRPO/RLOO use as the sequence reward).</summary>
    public Tensor SequenceTotals()
    {
        using var scope = NewDisposeScope();
        return (Values * Mask).sum(1).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        Values.Dispose();
        Mask.Dispose();
    }
}

/// <summary>
/// What a reward source sees: the response tokens [B, T] (right-padded or not) with their mask,
/// and optionally the prompts and decoded texts for sources that work on text, and each row's dataset columns (the other
/// fields of its prompt's row, e.g. a <c>solution</c>; see <see cref="RewardSource.Columns"/>).
/// </summary>
public sealed record RewardBatch(
    Tensor ResponseIds,
    Tensor ResponseMask,
    Tensor? PromptIds = null,
    IReadOnlyList<string>? PromptTexts = null,
    IReadOnlyList<string>? ResponseTexts = null,
    IReadOnlyList<IReadOnlyDictionary<string, string>>? Columns = null)
{
    public long BatchSize => ResponseIds.shape[0];
    public long Time => ResponseIds.shape[1];
}

/// <summary>
/// A producer of dense token rewards. Subclasses return a raw [B, T] tensor; this base checks its
/// shape and that every valid entry is finite (naming the source and the batch index otherwise),
/// zeroes padding and logs <c>rewards/&lt;Name&gt;</c> = batch mean of the per-sequence reward sums.
/// </summary>
public abstract class RewardSource
{
    protected RewardSource(string name)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new FineAlignException("a reward source needs a non-empty name");
        Name = name;
    }

    public string Name { get; }

    /// <summary>The dataset columns this source reads from <see cref="RewardBatch.Columns"/> (checked against the prompt file before training).</summary>
    public virtual IReadOnlyList<string> Columns => [];

    /// <summary>Why <paramref name="value"/> of <paramref name="column"/> is unusable (e.g. no number for <c>numeric:</c>), or null; checked with the file's line before training.</summary>
    public virtual string? ColumnProblem(string column, string value) => null;

    /// <summary>Row <paramref name="index"/>'s value of <paramref name="column"/>, or a one-line error naming the source, the column and the row.</summary>
    protected string ColumnValue(RewardBatch batch, int index, string column) =>
        batch.Columns is { } cols && index < cols.Count && cols[index].TryGetValue(column, out var v) ? v
            : throw new FineAlignException($"reward source '{Name}' reads the dataset column '{column}', which batch index {index} does not have (give --prompts rows with a '{column}' field)");

    /// <summary>The rewards for <paramref name="batch"/>, checked and masked.</summary>
    public TokenRewards Compute(RewardBatch batch)
    {
        if (batch.ResponseIds.dim() != 2 || !batch.ResponseIds.shape.SequenceEqual(batch.ResponseMask.shape))
            throw new FineAlignException($"reward source '{Name}': response ids [{string.Join(", ", batch.ResponseIds.shape)}] and mask [{string.Join(", ", batch.ResponseMask.shape)}] must both be [batch, time]");
        using var scope = NewDisposeScope();
        var mask = batch.ResponseMask.detach().to(float32);
        Tensor raw;
        using (no_grad()) raw = ComputeValues(batch);
        if (!raw.shape.SequenceEqual(mask.shape))
            throw new FineAlignException($"reward source '{Name}' returned [{string.Join(", ", raw.shape)}], expected [{string.Join(", ", mask.shape)}]");
        var values = raw.detach().to(float32);
        CheckFinite(Name, values, mask);
        values = values.masked_fill(mask.eq(0), 0f);
        var metrics = new Dictionary<string, double>();
        AddMetrics(metrics, values, mask);
        return new TokenRewards(values.MoveToOuterDisposeScope(), mask.clone().MoveToOuterDisposeScope(), metrics);
    }

    /// <summary>The raw rewards [B, T]; padding entries may hold anything finite (they are zeroed).</summary>
    protected abstract Tensor ComputeValues(RewardBatch batch);

    /// <summary>Adds this batch's log values; the default is <c>rewards/&lt;Name&gt;</c> = mean over sequences of Σ_t r_t.</summary>
    protected virtual void AddMetrics(Dictionary<string, double> metrics, Tensor values, Tensor mask)
        => metrics[$"rewards/{Name}"] = values.shape[0] == 0 ? 0.0 : (values * mask).sum(1).mean().item<float>();

    /// <summary>Throws naming <paramref name="source"/> and the first batch row holding NaN/±Inf on a valid position.</summary>
    public static void CheckFinite(string source, Tensor values, Tensor? mask = null)
    {
        using var scope = NewDisposeScope();
        var bad = values.isfinite().logical_not();
        if (mask is not null) bad = bad.logical_and(mask.to(ScalarType.Bool));
        if (bad.dim() > 1) bad = bad.flatten(1).any(1);
        var rows = bad.nonzero();
        if (rows.shape[0] > 0)
        {
            long b = rows[0, 0].item<long>();
            throw new FineAlignException($"reward source '{source}' produced NaN or Inf at batch index {b}");
        }
    }
}
