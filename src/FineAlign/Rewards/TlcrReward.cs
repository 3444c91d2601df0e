using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Rewards;

/// <summary>How TLCR turns the discriminator's p_t = D(positive | x, y_≤t) into a reward.</summary>
public enum TlcrMapping
{
    /// <summary>r = 2p − 1 ∈ [−1, 1] (the paper).</summary>
    Paper,
    /// <summary>r = 2σ(2p − 1) − 1 = tanh(p − ½) (the released code's double softmax, about half the scale).</summary>
    Code,
    /// <summary>+1 if p &gt; ½, −1 if p &lt; ½, 0 at exactly ½ (the discrete token-reward baseline).</summary>
    Discrete,
}

/// <summary>Which signs of the reward to keep (ablations in the TLCR code).</summary>
public enum TlcrSign { Both, PositiveOnly, NegativeOnly }

/// <summary>TLCR reward options; the defaults are the paper's.</summary>
public sealed record TlcrOptions
{
    public TlcrMapping Mapping { get; init; } = TlcrMapping.Paper;
    /// <summary>If true, r = 0 where DeadZoneLow &lt; p &lt; DeadZoneHigh.</summary>
    public bool DeadZone { get; init; }
    public double DeadZoneLow { get; init; } = 0.4;
    public double DeadZoneHigh { get; init; } = 0.6;
    public TlcrSign Sign { get; init; } = TlcrSign.Both;
    /// <summary>Final clip(r, −Clip, Clip), 5 in the paper's PPO.</summary>
    public double Clip { get; init; } = 5.0;
}

/// <summary>
/// Token-Level Continuous Reward (Yoon et al., ACL Findings 2024, arXiv 2407.16574): r_t from the
/// discriminator's positive-class probability p_t at every response token. The discriminator itself
/// is any delegate returning p [B, T] ∈ [0, 1].
/// </summary>
public sealed class TlcrReward : RewardSource
{
    private readonly Func<RewardBatch, Tensor> _probabilities;

    public TlcrReward(string name, Func<RewardBatch, Tensor> probabilities, TlcrOptions? options = null) : base(name)
    {
        _probabilities = probabilities;
        Options = options ?? new TlcrOptions();
    }

    public TlcrOptions Options { get; }

    protected override Tensor ComputeValues(RewardBatch batch)
    {
        var p = _probabilities(batch);
        if (!p.shape.SequenceEqual(batch.ResponseMask.shape))
            throw new FineAlignException($"reward source '{Name}' returned probabilities [{string.Join(", ", p.shape)}], expected [{string.Join(", ", batch.ResponseMask.shape)}]");
        CheckFinite(Name, p, batch.ResponseMask);
        using var scope = NewDisposeScope();
        var valid = batch.ResponseMask.to(ScalarType.Bool);
        var outOfRange = p.lt(0).logical_or(p.gt(1)).logical_and(valid).any(1).nonzero();
        if (outOfRange.shape[0] > 0)
            throw new FineAlignException($"reward source '{Name}': probabilities must lie in [0, 1] (batch index {outOfRange[0, 0].item<long>()})");
        return FromProbabilities(p.masked_fill(valid.logical_not(), 0.5), Options).MoveToOuterDisposeScope();
    }

    /// <summary>The TLCR reward for every entry of <paramref name="p"/> (pure, elementwise).</summary>
    public static Tensor FromProbabilities(Tensor p, TlcrOptions? options = null)
    {
        var o = options ?? new TlcrOptions();
        using var scope = NewDisposeScope();
        var x = p.detach().to(float32);
        Tensor r = o.Mapping switch
        {
            TlcrMapping.Paper => 2 * x - 1,
            TlcrMapping.Code => (x - 0.5).tanh(),
            TlcrMapping.Discrete => x.gt(0.5).to(float32) - x.lt(0.5).to(float32),
            _ => throw new FineAlignException($"unknown TLCR mapping {o.Mapping}"),
        };
        if (o.DeadZone)
            r = r.masked_fill(x.gt(o.DeadZoneLow).logical_and(x.lt(o.DeadZoneHigh)), 0f);
        if (o.Sign == TlcrSign.PositiveOnly) r = r.clamp_min(0);
        else if (o.Sign == TlcrSign.NegativeOnly) r = r.clamp_max(0);
        r = r.clamp(-o.Clip, o.Clip);
        return r.MoveToOuterDisposeScope();
    }
}
