using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Rewards;

/// <summary>Options of the pivot-token segmentation (every step configurable; defaults = no smoothing, no minimum).</summary>
public sealed record PivotOptions
{
    /// <summary>Moving-average window applied before taking signs (1 = none). Covers i − ⌊(w−1)/2⌋ .. i + ⌈(w−1)/2⌉, truncated at the ends.</summary>
    public int SmoothingWindow { get; init; } = 1;
    /// <summary>Runs shorter than this are absorbed by the previous segment (the first one by the next).</summary>
    public int MinSegmentLength { get; init; } = 1;
}

/// <summary>A segment of a response: [Start, Start + Length) in valid-token positions, and its mean reward.</summary>
public readonly record struct Segment(int Start, int Length, float Score);

/// <summary>
/// Adaptive message-wise rewards with pivot tokens (Li et al. 2024, arXiv 2411.00809) — our reading,
/// since the paper has no code (see docs/ALGORITHMS.md):
/// 1. pivots are where sign(r_t) changes (after optional smoothing); a zero keeps the current sign;
/// 2. runs shorter than the minimum length join the previous segment (the first joins the next) and
///    neighbours of equal sign are then merged, so segments alternate in sign;
/// 3. segment score s_k = mean of the (unsmoothed) r_t over segment k;
/// 4. mask m_t = 1 where sign(s_k) equals the sample label (+1 chosen / −1 rejected), else 0;
///    or, for PPO, every token gets its segment's score.
/// Padding positions are skipped: a row's valid tokens are segmented as one sequence, outputs are 0 on padding.
/// </summary>
public static class PivotSegments
{
    /// <summary>Segments of one response's token rewards (valid tokens only, in order).</summary>
    public static IReadOnlyList<Segment> Split(ReadOnlySpan<float> rewards, PivotOptions? options = null)
    {
        var o = options ?? new PivotOptions();
        if (o.SmoothingWindow < 1) throw new FineAlignException($"pivot smoothing window must be >= 1, got {o.SmoothingWindow}");
        if (o.MinSegmentLength < 1) throw new FineAlignException($"pivot minimum segment length must be >= 1, got {o.MinSegmentLength}");
        int n = rewards.Length;
        if (n == 0) return Array.Empty<Segment>();
        var smooth = Smooth(rewards, o.SmoothingWindow);

        // 1. Runs of constant sign; zeros continue the current run (leading zeros join the first signed run).
        var runs = new List<(int Start, int Length, int Sign)>();
        int start = 0, sign = 0;
        for (int i = 0; i < n; i++)
        {
            int s = Math.Sign(smooth[i]);
            if (s != 0 && sign != 0 && s != sign)
            {
                runs.Add((start, i - start, sign));
                start = i;
            }
            if (s != 0) sign = s;
        }
        runs.Add((start, n - start, sign));

        // 2. Absorb short runs, then merge equal-sign neighbours.
        var merged = new List<(int Start, int Length, int Sign)>();
        int pendingStart = -1; // short leading runs waiting for the next run
        foreach (var run in runs)
        {
            int end = run.Start + run.Length;
            if (run.Length < o.MinSegmentLength)
            {
                if (merged.Count > 0) { var last = merged[^1]; merged[^1] = (last.Start, end - last.Start, last.Sign); }
                else if (pendingStart < 0) pendingStart = run.Start;
                continue;
            }
            var r = pendingStart >= 0 ? (pendingStart, end - pendingStart, run.Sign) : run;
            pendingStart = -1;
            if (merged.Count > 0 && merged[^1].Sign == r.Sign)
            {
                var last = merged[^1];
                merged[^1] = (last.Start, end - last.Start, last.Sign);
            }
            else merged.Add(r);
        }
        if (merged.Count == 0) merged.Add((0, n, runs[0].Sign)); // everything shorter than the minimum: one segment

        var result = new Segment[merged.Count];
        for (int k = 0; k < merged.Count; k++)
        {
            double sum = 0;
            for (int i = merged[k].Start; i < merged[k].Start + merged[k].Length; i++) sum += rewards[i];
            result[k] = new Segment(merged[k].Start, merged[k].Length, (float)(sum / merged[k].Length));
        }
        return result;
    }

    /// <summary>
    /// Step 1's DPO option: the implicit per-token reward β (log π(y_t) − log π_ref(y_t)), [B, T], 0 on padding, detached.
    /// </summary>
    public static Tensor ImplicitTokenRewards(Tensor logp, Tensor refLogp, Tensor mask, double beta = 0.1)
    {
        if (logp.dim() != 2 || !logp.shape.SequenceEqual(refLogp.shape) || !logp.shape.SequenceEqual(mask.shape))
            throw new FineAlignException($"log-probs [{string.Join(", ", logp.shape)}], reference [{string.Join(", ", refLogp.shape)}] and mask [{string.Join(", ", mask.shape)}] must all be the same [batch, time]");
        using var scope = NewDisposeScope();
        var pad = mask.detach().to(float32).eq(0);
        var r = beta * (logp.detach().to(float32).masked_fill(pad, 0) - refLogp.detach().to(float32).masked_fill(pad, 0));
        return r.MoveToOuterDisposeScope();
    }

    /// <summary>Every valid token gets the score of its segment, [B, T]; 0 on padding (the PPO variant).</summary>
    public static Tensor SegmentScores(Tensor rewards, Tensor mask, PivotOptions? options = null)
        => PerToken(rewards, mask, options, null);

    /// <summary>
    /// m_t ∈ {0, 1}, [B, T]: 1 where the sign of the token's segment score equals <paramref name="labels"/>[b]
    /// (+1 chosen / thumbs-up, −1 rejected / thumbs-down); 0 on padding and on zero-score segments.
    /// </summary>
    public static Tensor AgreementMask(Tensor rewards, Tensor mask, Tensor labels, PivotOptions? options = null)
    {
        if (labels.dim() != 1 || labels.shape[0] != rewards.shape[0])
            throw new FineAlignException($"sample labels must be [batch] = [{rewards.shape[0]}], got [{string.Join(", ", labels.shape)}]");
        var l = labels.to(float32).cpu().contiguous().data<float>().ToArray();
        for (int b = 0; b < l.Length; b++)
            if (l[b] != 1 && l[b] != -1) throw new FineAlignException($"sample label at batch index {b} must be +1 or -1, got {l[b]}");
        return PerToken(rewards, mask, options, l);
    }

    private static Tensor PerToken(Tensor rewards, Tensor mask, PivotOptions? options, float[]? labels)
    {
        if (rewards.dim() != 2 || !rewards.shape.SequenceEqual(mask.shape))
            throw new FineAlignException($"token rewards [{string.Join(", ", rewards.shape)}] and mask [{string.Join(", ", mask.shape)}] must both be [batch, time]");
        int b = (int)rewards.shape[0], t = (int)rewards.shape[1];
        var r = rewards.detach().to(float32).cpu().contiguous().data<float>().ToArray();
        var m = mask.detach().to(ScalarType.Bool).cpu().contiguous().data<bool>().ToArray();
        RewardSource.CheckFinite("pivot segments input", rewards.detach(), mask);
        var output = new float[b * t];
        var positions = new List<int>();
        var values = new List<float>();
        for (int i = 0; i < b; i++)
        {
            positions.Clear(); values.Clear();
            for (int j = 0; j < t; j++)
                if (m[i * t + j]) { positions.Add(j); values.Add(r[i * t + j]); }
            foreach (var seg in Split(values.ToArray(), options))
            {
                float v = labels is null ? seg.Score : (Math.Sign(seg.Score) == (int)labels[i] ? 1f : 0f);
                for (int k = seg.Start; k < seg.Start + seg.Length; k++) output[i * t + positions[k]] = v;
            }
        }
        return tensor(output, new long[] { b, t }).to(rewards.device);
    }

    private static float[] Smooth(ReadOnlySpan<float> x, int window)
    {
        var y = x.ToArray();
        if (window == 1) return y;
        int left = (window - 1) / 2, right = window - 1 - left;
        for (int i = 0; i < x.Length; i++)
        {
            int lo = Math.Max(0, i - left), hi = Math.Min(x.Length - 1, i + right);
            double s = 0;
            for (int k = lo; k <= hi; k++) s += x[k];
            y[i] = (float)(s / (hi - lo + 1));
        }
        return y;
    }
}

/// <summary>Wraps a token-level source so every token gets its pivot segment's mean reward (PPO use).</summary>
public sealed class PivotSegmentRewardSource : RewardSource
{
    private readonly RewardSource _inner;
    private readonly PivotOptions _options;

    public PivotSegmentRewardSource(string name, RewardSource inner, PivotOptions? options = null) : base(name)
    {
        _inner = inner;
        _options = options ?? new PivotOptions();
    }

    protected override Tensor ComputeValues(RewardBatch batch)
    {
        using var inner = _inner.Compute(batch);
        return PivotSegments.SegmentScores(inner.Values, inner.Mask, _options);
    }
}
