using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

#pragma warning disable IDE1006 // field names are the Hugging Face parameter names

namespace FineAlign.Models;

/// <summary>
/// GPT-2's Conv1D: a linear layer whose weight is stored [in, out] (transposed relative to
/// nn.Linear). Kept in that layout so parameter shapes match the checkpoint.
/// </summary>
public sealed class Conv1D : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly Parameter bias;

    public Conv1D(long inFeatures, long outFeatures, ScalarType dtype = ScalarType.Float32) : base(nameof(Conv1D))
    {
        weight = nn.Parameter(empty(new[] { inFeatures, outFeatures }, dtype).normal_(0, 0.02));
        bias = nn.Parameter(zeros(outFeatures, dtype));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        long inF = weight.shape[0], outF = weight.shape[1];
        var shape = x.shape.ToArray();
        shape[^1] = outF;
        using var flat = x.reshape(-1, inF);
        using var y = addmm(bias, flat, weight, 1, 1);
        return y.view(shape);
    }
}

internal sealed class Gpt2Attention : nn.Module
{
    private readonly Conv1D c_attn, c_proj;
    private readonly int _heads, _headDim;

    public Gpt2Attention(ModelConfig c, ScalarType dtype) : base(nameof(Gpt2Attention))
    {
        _heads = c.NumHeads; _headDim = c.HeadDim;
        c_attn = new Conv1D(c.HiddenSize, 3L * c.HiddenSize, dtype);
        c_proj = new Conv1D(c.HiddenSize, c.HiddenSize, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, AttentionPlan plan, int layer)
    {
        long b = x.shape[0], t = x.shape[1], c = x.shape[2];
        var qkv = c_attn.forward(x).split(c, 2);
        var q = qkv[0].view(b, t, _heads, _headDim).transpose(1, 2);
        var k = qkv[1].view(b, t, _heads, _headDim).transpose(1, 2);
        var v = qkv[2].view(b, t, _heads, _headDim).transpose(1, 2);
        if (plan.Cache is not null) (k, v) = plan.Cache.Update(layer, k, v);
        var o = plan.Attend(q, k, v);
        return c_proj.forward(o.transpose(1, 2).reshape(b, t, c));
    }
}

internal sealed class Gpt2Mlp : nn.Module<Tensor, Tensor>
{
    private readonly Conv1D c_fc, c_proj;
    private readonly string _act;

    public Gpt2Mlp(ModelConfig c, ScalarType dtype) : base(nameof(Gpt2Mlp))
    {
        _act = c.HiddenAct;
        c_fc = new Conv1D(c.HiddenSize, c.IntermediateSize, dtype);
        c_proj = new Conv1D(c.IntermediateSize, c.HiddenSize, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => c_proj.forward(Activations.Apply(_act, c_fc.forward(x)));
}

internal sealed class Gpt2Block : nn.Module
{
    private readonly LayerNorm ln_1, ln_2;
    private readonly Gpt2Attention attn;
    private readonly Gpt2Mlp mlp;

    public Gpt2Block(ModelConfig c, ScalarType dtype) : base(nameof(Gpt2Block))
    {
        ln_1 = nn.LayerNorm(c.HiddenSize, c.NormEps, dtype: dtype);
        attn = new Gpt2Attention(c, dtype);
        ln_2 = nn.LayerNorm(c.HiddenSize, c.NormEps, dtype: dtype);
        mlp = new Gpt2Mlp(c, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, AttentionPlan plan, int layer)
    {
        var h = x + attn.Forward(ln_1.forward(x), plan, layer);
        return h + mlp.forward(ln_2.forward(h));
    }
}

internal sealed class Gpt2Model : nn.Module
{
    public readonly Embedding wte, wpe;
    public readonly ModuleList<Gpt2Block> h;
    public readonly LayerNorm ln_f;

    public Gpt2Model(ModelConfig c, ScalarType dtype) : base(nameof(Gpt2Model))
    {
        wte = nn.Embedding(c.VocabSize, c.HiddenSize, dtype: dtype);
        wpe = nn.Embedding(c.MaxPositionEmbeddings, c.HiddenSize, dtype: dtype);
        h = nn.ModuleList(Enumerable.Range(0, c.NumLayers).Select(_ => new Gpt2Block(c, dtype)).ToArray());
        ln_f = nn.LayerNorm(c.HiddenSize, c.NormEps, dtype: dtype);
        RegisterComponents();
    }
}

/// <summary>
/// GPT-2 (Radford et al. 2019) as transformers' GPT2LMHeadModel: learned positions, pre-LayerNorm
/// blocks, gelu_new MLP, Conv1D weights stored [in, out], LM head tied to <c>transformer.wte</c>.
/// </summary>
public sealed class Gpt2LMHeadModel : CausalLM
{
    private readonly Gpt2Model transformer;
    private readonly Linear? lm_head;

    public Gpt2LMHeadModel(ModelConfig config, ScalarType dtype = ScalarType.Float32) : base(nameof(Gpt2LMHeadModel), config)
    {
        if (!config.IsGpt2) throw new ArgumentException("Gpt2LMHeadModel needs model_type gpt2");
        Activations.Check(config.HiddenAct, "config.json: activation_function");
        foreach (var flag in new[] { "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn" })
            if (config.Raw?[flag] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue(out bool on) && on)
                throw new FineAlignException($"config.json: GPT-2 option '{flag}' is not supported.");
        transformer = new Gpt2Model(config, dtype);
        if (!config.TieWordEmbeddings) lm_head = nn.Linear(config.HiddenSize, config.VocabSize, false, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor ForwardHidden(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var tok = transformer.wte.forward(inputIds);
        var plan = AttentionPlan.Create(inputIds, attentionMask, cache, tok.dtype);
        // A position never exceeds its column (past + new − 1), so only a longer sequence needs the host-side check.
        long maxPos = (cache?.Length ?? 0) + inputIds.shape[1] <= Config.MaxPositionEmbeddings ? 0 : plan.Positions.max().item<long>();
        if (maxPos >= Config.MaxPositionEmbeddings)
            throw new FineAlignException($"position {maxPos} exceeds GPT-2's n_positions ({Config.MaxPositionEmbeddings}); shorten the sequence.");
        var x = tok + transformer.wpe.forward(plan.Positions);
        for (int i = 0; i < transformer.h.Count; i++)
            x = transformer.h[i].Forward(x, plan, i);
        x = transformer.ln_f.forward(x);
        cache?.Advance((int)inputIds.shape[1]);
        return x.MoveToOuterDisposeScope();
    }

    public override Tensor LmHead(Tensor hidden)
        => lm_head is null ? F.linear(hidden, transformer.wte.weight!) : lm_head.forward(hidden);
}
