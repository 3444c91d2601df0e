using FineAlign.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Data;

/// <summary>
/// A right-padded batch: <see cref="InputIds"/> [B,T] int64, <see cref="AttentionMask"/> [B,T] int64
/// (1 = real token, 0 = padding), <see cref="LossMask"/> [B,T] bool (padding is never a target).
/// </summary>
public sealed record TokenBatch(Tensor InputIds, Tensor AttentionMask, Tensor LossMask) : IDisposable
{
    public long BatchSize => InputIds.shape[0];
    public long Length => InputIds.shape[1];

    public void Dispose()
    {
        InputIds.Dispose();
        AttentionMask.Dispose();
        LossMask.Dispose();
    }
}

/// <summary>Pads examples on the right into a <see cref="TokenBatch"/>.</summary>
public static class Collator
{
    /// <param name="padId">The pad id (usually <c>tokenizer.PaddingId</c>); masked out everywhere.</param>
    /// <param name="device">Target device (CPU when null).</param>
    public static TokenBatch Collate(IReadOnlyList<TokenizedExample> batch, int padId, Device? device = null)
    {
        if (batch.Count == 0) throw new ArgumentException("cannot collate an empty batch", nameof(batch));
        int b = batch.Count, t = batch.Max(e => e.Length);
        if (t == 0) throw new ArgumentException("cannot collate a batch of empty examples", nameof(batch));
        for (int i = 0; i < b; i++)
            if (batch[i].LossMask.Length != batch[i].InputIds.Length)
                throw new ArgumentException($"example {i}: {batch[i].InputIds.Length} ids but {batch[i].LossMask.Length} mask entries");
        var ids = PadRows.Rows(batch.Select(e => (IReadOnlyList<long>)e.InputIds.Select(x => (long)x).ToArray()).ToList(), t, (long)padId);
        var attn = PadRows.Mask(batch.Select(e => e.Length).ToList(), t, 1L);
        var loss = PadRows.Rows(batch.Select(e => (IReadOnlyList<bool>)e.LossMask).ToList(), t, false);
        long[] shape = [b, t];
        var inputIds = torch.tensor(ids, shape, dtype: ScalarType.Int64, device: device);
        var attention = torch.tensor(attn, shape, dtype: ScalarType.Int64, device: device);
        var lossMask = torch.tensor(loss, shape, dtype: ScalarType.Bool, device: device);
        return new TokenBatch(inputIds, attention, lossMask);
    }
}
