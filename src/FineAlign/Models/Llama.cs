using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

// Field names below are the Hugging Face parameter names (TorchSharp names submodules after fields).
#pragma warning disable IDE1006

namespace FineAlign.Models;

/// <summary>
/// Root-mean-square layer norm (Zhang &amp; Sennrich 2019), computed in fp32 and cast back as
/// transformers' LlamaRMSNorm does: weight · (x / √(mean(x²) + eps)).
/// </summary>
public sealed class RMSNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly double _eps;

    public RMSNorm(long dim, double eps, ScalarType dtype = ScalarType.Float32) : base(nameof(RMSNorm))
    {
        weight = nn.Parameter(ones(dim, dtype));
        _eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x.to(ScalarType.Float32);
        var variance = h.pow(2).mean(new long[] { -1 }, keepdim: true);
        h = h * (variance + _eps).rsqrt();
        return (weight * h.to(x.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Rotary position embedding (Su et al. 2021, RoFormer) in transformers' rotate_half layout:
/// the two halves of each head are rotated together (not interleaved pairs).
/// </summary>
internal static class Rotary
{
    /// <summary>cos and sin, [batch, 1, tokens, headDim], in fp32.</summary>
    public static (Tensor Cos, Tensor Sin) Tables(Tensor positions, int headDim, double theta)
    {
        using var scope = NewDisposeScope();
        var inv = new float[headDim / 2];
        for (int i = 0; i < inv.Length; i++) inv[i] = (float)(1.0 / Math.Pow(theta, (float)(2 * i) / headDim));
        var invFreq = tensor(inv, device: positions.device);                                    // [D/2]
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1) * invFreq;                   // [B, T, D/2]
        var emb = cat(new[] { freqs, freqs }, -1).unsqueeze(1);                                 // [B, 1, T, D]
        return (emb.cos().MoveToOuterDisposeScope(), emb.sin().MoveToOuterDisposeScope());
    }

    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat(new[] { x2.neg(), x1 }, -1);
        return x * cos + rotated * sin;
    }
}

internal sealed class LlamaAttention : nn.Module
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly int _heads, _kvHeads, _headDim;

    public LlamaAttention(ModelConfig c, ScalarType dtype) : base(nameof(LlamaAttention))
    {
        _heads = c.NumHeads; _kvHeads = c.NumKvHeads; _headDim = c.HeadDim;
        // transformers: q/k/v bias = attention_bias (always on for Qwen2); o_proj bias only for Llama's attention_bias.
        bool oBias = c.AttentionBias && c.ModelType == "llama";
        q_proj = nn.Linear(c.HiddenSize, (long)_heads * _headDim, c.AttentionBias, dtype: dtype);
        k_proj = nn.Linear(c.HiddenSize, (long)_kvHeads * _headDim, c.AttentionBias, dtype: dtype);
        v_proj = nn.Linear(c.HiddenSize, (long)_kvHeads * _headDim, c.AttentionBias, dtype: dtype);
        o_proj = nn.Linear((long)_heads * _headDim, c.HiddenSize, oBias, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionPlan plan, int layer)
    {
        long b = x.shape[0], t = x.shape[1];
        var q = q_proj.forward(x).view(b, t, _heads, _headDim).transpose(1, 2);
        var k = k_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        var v = v_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        q = Rotary.Apply(q, cos, sin);
        k = Rotary.Apply(k, cos, sin);
        if (plan.Cache is not null) (k, v) = plan.Cache.Update(layer, k, v);
        var o = plan.Attend(q, k, v);
        return o_proj.forward(o.transpose(1, 2).reshape(b, t, (long)_heads * _headDim));
    }
}

internal sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    private readonly Linear gate_proj, up_proj, down_proj;
    private readonly string _act;

    public LlamaMlp(ModelConfig c, ScalarType dtype) : base(nameof(LlamaMlp))
    {
        _act = c.HiddenAct;
        gate_proj = nn.Linear(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype: dtype);
        up_proj = nn.Linear(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype: dtype);
        down_proj = nn.Linear(c.IntermediateSize, c.HiddenSize, c.MlpBias, dtype: dtype);
        RegisterComponents();
    }

    // SwiGLU (Shazeer 2020): down(act(gate(x)) · up(x)).
    public override Tensor forward(Tensor x)
        => down_proj.forward(Activations.Apply(_act, gate_proj.forward(x)) * up_proj.forward(x));
}

internal sealed class LlamaDecoderLayer : nn.Module
{
    private readonly LlamaAttention self_attn;
    private readonly LlamaMlp mlp;
    private readonly RMSNorm input_layernorm, post_attention_layernorm;

    public LlamaDecoderLayer(ModelConfig c, ScalarType dtype) : base(nameof(LlamaDecoderLayer))
    {
        self_attn = new LlamaAttention(c, dtype);
        mlp = new LlamaMlp(c, dtype);
        input_layernorm = new RMSNorm(c.HiddenSize, c.NormEps, dtype);
        post_attention_layernorm = new RMSNorm(c.HiddenSize, c.NormEps, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionPlan plan, int layer)
    {
        var h = x + self_attn.Forward(input_layernorm.forward(x), cos, sin, plan, layer);
        return h + mlp.forward(post_attention_layernorm.forward(h));
    }
}

internal sealed class LlamaModel : nn.Module
{
    public readonly Embedding embed_tokens;
    public readonly ModuleList<LlamaDecoderLayer> layers;
    public readonly RMSNorm norm;

    public LlamaModel(ModelConfig c, ScalarType dtype) : base(nameof(LlamaModel))
    {
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize, dtype: dtype);
        layers = nn.ModuleList(Enumerable.Range(0, c.NumLayers).Select(_ => new LlamaDecoderLayer(c, dtype)).ToArray());
        norm = new RMSNorm(c.HiddenSize, c.NormEps, dtype);
        RegisterComponents();
    }
}

/// <summary>
/// The decoder of Llama, Mistral and Qwen2 (transformers' LlamaForCausalLM / MistralForCausalLM /
/// Qwen2ForCausalLM): RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP.
/// Mistral/Qwen2 sliding-window attention is not applied (exact for sequences shorter than the window).
/// </summary>
public sealed class LlamaForCausalLM : CausalLM
{
    private readonly LlamaModel model;
    private readonly Linear? lm_head;

    public LlamaForCausalLM(ModelConfig config, ScalarType dtype = ScalarType.Float32) : base(nameof(LlamaForCausalLM), config)
    {
        if (config.IsGpt2) throw new ArgumentException("use Gpt2LMHeadModel for model_type gpt2");
        Activations.Check(config.HiddenAct, "config.json: hidden_act");
        CheckRopeScaling(config);
        model = new LlamaModel(config, dtype);
        if (!config.TieWordEmbeddings) lm_head = nn.Linear(config.HiddenSize, config.VocabSize, false, dtype: dtype);
        RegisterComponents();
    }

    private static void CheckRopeScaling(ModelConfig c)
    {
        var rs = c.Raw?["rope_scaling"];
        if (rs is null || rs.GetValueKind() == System.Text.Json.JsonValueKind.Null) return;
        string? type = (rs["rope_type"] ?? rs["type"])?.ToString();
        if (type is null or "default") return;
        throw new FineAlignException($"config.json: rope_scaling type '{type}' is not supported (only the default rotary embedding is implemented).");
    }

    public override Tensor ForwardHidden(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var x = model.embed_tokens.forward(inputIds);
        var plan = AttentionPlan.Create(inputIds, attentionMask, cache, x.dtype);
        var (cos, sin) = Rotary.Tables(plan.Positions, Config.HeadDim, Config.RopeTheta);
        if (cos.dtype != x.dtype) { cos = cos.to(x.dtype); sin = sin.to(x.dtype); }
        for (int i = 0; i < model.layers.Count; i++)
            x = model.layers[i].Forward(x, cos, sin, plan, i);
        x = model.norm.forward(x);
        cache?.Advance((int)inputIds.shape[1]);
        return x.MoveToOuterDisposeScope();
    }

    public override Tensor LmHead(Tensor hidden)
        => lm_head is null ? F.linear(hidden, model.embed_tokens.weight!) : lm_head.forward(hidden);
}
