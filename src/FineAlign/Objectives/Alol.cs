using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Objectives;

/// <summary>A-LoL objective variants and the baselines from the same paper.</summary>
public enum AlolVariant
{
    /// <summary>mean(NLL · w · A⁺), w = clip(π_θ(y)/π_ref(y), 1−ε, 1+ε) for the whole sequence.</summary>
    Alol,
    /// <summary>mean(A⁺ · Σ_i w_i · (−log π_θ(y_i))), w_i = per-token ratio, each clipped.</summary>
    AlolSeq,
    /// <summary>mean(NLL · A⁺) (w = 1).</summary>
    AlolRefFree,
    /// <summary>mean(NLL · A⁺) + β_KL · mean(log π_θ(y) − log π_ref(y)).</summary>
    AlolKl,
    /// <summary>R-LoL: like A-LoL with the reward R instead of A⁺.</summary>
    RLol,
    /// <summary>Reward-weighted behaviour cloning: mean(NLL · R).</summary>
    WeightedBc,
    /// <summary>R-GOLD: mean(R · Σ_i max(π_θ(y_i), u)_detached · (−log π_θ(y_i))), u = 0.1.</summary>
    RGold,
}

/// <summary>A-LoL settings: ε = 0.9 (weights in [0.1, 1.9], the HH reference run), β_KL for A-LoL KL, GOLD's floor u.</summary>
public sealed record AlolOptions
{
    public double Epsilon { get; init; } = 0.9;
    public double KlBeta { get; init; } = 0.1;
    public double GoldMinProbability { get; init; } = 0.1;
}

/// <summary>
/// Advantage-Leftover-Lunch RL (Baheti et al., ICLR 2024, arXiv 2305.14718): offline policy gradient
/// with the whole response as one action, ∇J = −E[(R − V_ref(x)) · π_θ/π_ref · ∇ log π_θ(y|x)].
/// Inputs: token log-probs [B, T] of the policy (with gradient) and the reference, the response mask,
/// per-sample rewards R [B] and cached advantages A = R − V [B]. Importance weights are detached.
/// </summary>
public static class Alol
{
    /// <summary>A = R − V(x), [B] (computed once before training and cached).</summary>
    public static Tensor Advantages(Tensor rewards, Tensor values)
    {
        if (rewards.dim() != 1 || !rewards.shape.SequenceEqual(values.shape))
            throw new FineAlignException($"rewards [{Masked.Shape(rewards)}] and values [{Masked.Shape(values)}] must both be [batch]");
        return rewards.detach().to(float32) - values.detach().to(float32);
    }

    /// <summary>A⁺ = max(A, 0).</summary>
    public static Tensor PositiveAdvantages(Tensor advantages) => advantages.detach().to(float32).clamp_min(0);

    /// <summary>Sequence weight clip(exp(log π_θ(y) − log π_ref(y)), 1−ε, 1+ε), detached, [B].</summary>
    public static Tensor SequenceWeight(Tensor sequenceLogp, Tensor refSequenceLogp, double epsilon = 0.9)
    {
        using var scope = NewDisposeScope();
        var w = (sequenceLogp.detach().to(float32) - refSequenceLogp.detach().to(float32)).exp().clamp(1 - epsilon, 1 + epsilon);
        return w.MoveToOuterDisposeScope();
    }

    /// <summary>Per-token weights clip(π_θ(y_i)/π_ref(y_i), 1−ε, 1+ε), detached, [B, T], 0 on padding.</summary>
    public static Tensor TokenWeights(Tensor tokenLogp, Tensor refTokenLogp, Tensor mask, double epsilon = 0.9)
    {
        Masked.CheckSame(tokenLogp, refTokenLogp, "reference log-probs");
        Masked.CheckSame(tokenLogp, mask, "mask");
        using var scope = NewDisposeScope();
        var m = Masked.AsFloatMask(mask);
        var logRatio = Masked.ZeroPadding(tokenLogp.detach().to(float32), m) - Masked.ZeroPadding(refTokenLogp.detach().to(float32), m);
        return Masked.ZeroPadding(logRatio.exp().clamp(1 - epsilon, 1 + epsilon), m).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The batch loss of <paramref name="variant"/> (mean over samples). <paramref name="rewards"/> is needed
    /// by R-LoL, weighted BC and R-GOLD; <paramref name="advantages"/> by the A-LoL variants.
    /// </summary>
    public static Tensor Loss(AlolVariant variant, Tensor tokenLogp, Tensor refTokenLogp, Tensor mask,
        Tensor? rewards, Tensor? advantages, AlolOptions? options = null)
    {
        var o = options ?? new AlolOptions();
        if (o.Epsilon < 0 || o.Epsilon > 1) throw new FineAlignException($"A-LoL epsilon must be in [0, 1], got {o.Epsilon}");
        Masked.CheckSame(tokenLogp, refTokenLogp, "reference log-probs");
        Masked.CheckSame(tokenLogp, mask, "mask");
        using var scope = NewDisposeScope();
        var m = Masked.AsFloatMask(mask);
        var logp = Masked.ZeroPadding(tokenLogp, m);   // padding may hold anything; it never reaches a sum
        var refLogp = Masked.ZeroPadding(refTokenLogp.detach().to(float32), m);
        var nll = -logp.sum(1);                  // −Σ_i log π_θ(y_i), [B]
        var seqLogp = logp.sum(1);
        var refSeqLogp = refLogp.sum(1);

        Tensor loss = variant switch
        {
            AlolVariant.Alol => (nll * SequenceWeight(seqLogp, refSeqLogp, o.Epsilon) * APlus()).mean(),
            AlolVariant.AlolSeq => (APlus() * (TokenWeights(logp, refLogp, m, o.Epsilon) * -logp).sum(1)).mean(),
            AlolVariant.AlolRefFree => (nll * APlus()).mean(),
            AlolVariant.AlolKl => (nll * APlus()).mean() + o.KlBeta * (seqLogp - refSeqLogp).mean(),
            AlolVariant.RLol => (nll * SequenceWeight(seqLogp, refSeqLogp, o.Epsilon) * R()).mean(),
            AlolVariant.WeightedBc => (nll * R()).mean(),
            AlolVariant.RGold => (R() * (logp.detach().exp().clamp_min(o.GoldMinProbability) * -logp).sum(1)).mean(),
            _ => throw new FineAlignException($"unknown A-LoL variant {variant}"),
        };
        return loss.MoveToOuterDisposeScope();

        Tensor APlus() => PositiveAdvantages(PerSample(advantages, "advantages"));
        Tensor R() => PerSample(rewards, "rewards").detach().to(float32);
        Tensor PerSample(Tensor? x, string what)
        {
            if (x is null) throw new FineAlignException($"A-LoL variant {variant} needs per-sample {what}");
            if (x.dim() != 1 || x.shape[0] != tokenLogp.shape[0])
                throw new FineAlignException($"A-LoL {what} must be [batch] = [{tokenLogp.shape[0]}], got [{Masked.Shape(x)}]");
            return x;
        }
    }

    /// <summary>
    /// Priority sampling distribution p_i = A⁺_i / Σ_j A⁺_j; examples with A ≤ 0 get probability 0.
    /// Throws if no example has a positive advantage (nothing to train on).
    /// </summary>
    public static double[] PriorityProbabilities(IReadOnlyList<double> advantages)
    {
        var p = new double[advantages.Count];
        double total = 0;
        for (int i = 0; i < p.Length; i++)
        {
            if (!double.IsFinite(advantages[i])) throw new FineAlignException($"A-LoL advantage at index {i} is NaN or Inf");
            p[i] = Math.Max(advantages[i], 0.0);
            total += p[i];
        }
        if (total <= 0) throw new FineAlignException("A-LoL priority sampling: no example has a positive advantage");
        for (int i = 0; i < p.Length; i++) p[i] /= total;
        return p;
    }

    /// <summary>Share of examples with A &gt; 0: the paper scales the step budget by it.</summary>
    public static double PositiveFraction(IReadOnlyList<double> advantages)
        => advantages.Count == 0 ? 0.0 : advantages.Count(a => a > 0) / (double)advantages.Count;
}

/// <summary>
/// Seeded draws with replacement from <see cref="Alol.PriorityProbabilities"/> (inverse CDF on a
/// <see cref="Random"/> with a fixed seed, so runs repeat). Examples with A ≤ 0 are never drawn.
/// </summary>
public sealed class PrioritySampler
{
    private readonly double[] _cumulative;
    private readonly int _lastPositive;
    private readonly Random _random;

    public PrioritySampler(IReadOnlyList<double> advantages, int seed)
    {
        Probabilities = Alol.PriorityProbabilities(advantages);
        _cumulative = new double[Probabilities.Length];
        double c = 0;
        for (int i = 0; i < Probabilities.Length; i++)
        {
            c += Probabilities[i];
            _cumulative[i] = c;
            if (Probabilities[i] > 0) _lastPositive = i;
        }
        _random = new Random(seed);
    }

    public double[] Probabilities { get; }

    /// <summary>One example index.</summary>
    public int Next()
    {
        double u = _random.NextDouble();
        // First index whose cumulative mass exceeds u; zero-probability entries never satisfy this first.
        int lo = 0, hi = _cumulative.Length - 1;
        while (lo < hi)
        {
            int mid = (lo + hi) / 2;
            if (_cumulative[mid] > u) hi = mid; else lo = mid + 1;
        }
        // Rounding can leave the total a hair below u; fall back to the last drawable example.
        return _cumulative[lo] > u && Probabilities[lo] > 0 ? lo : _lastPositive;
    }

    /// <summary><paramref name="count"/> example indices, with replacement.</summary>
    public int[] Draw(int count)
    {
        var r = new int[count];
        for (int i = 0; i < count; i++) r[i] = Next();
        return r;
    }
}
