using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>
/// A decoder-only language model. Parameter names equal the Hugging Face tensor names
/// (e.g. <c>model.layers.0.self_attn.q_proj.weight</c>), so <c>state_dict()</c> maps 1:1 onto
/// safetensors files.
/// </summary>
/// <remarks>
/// Attention-mask convention (as in transformers): <c>attentionMask</c> is [batch, past + new]
/// with 1 for real tokens and 0 for padding, covering the cached tokens too. Position ids are
/// derived from it (cumulative sum − 1), so left-padded prompts get positions starting at 0.
/// A null mask means "no padding".
/// </remarks>
public abstract class CausalLM : nn.Module
{
    protected CausalLM(string name, ModelConfig config) : base(name) => Config = config;

    public ModelConfig Config { get; }

    /// <summary>Final hidden states (after the last norm), [batch, new tokens, hidden].</summary>
    public abstract Tensor ForwardHidden(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null);

    /// <summary>Projects hidden states to vocabulary logits.</summary>
    public abstract Tensor LmHead(Tensor hidden);

    /// <summary>
    /// <see cref="LmHead"/> for hidden states that came out of a forward through <paramref name="cache"/> (generation):
    /// the same logits within float rounding; a model may compute them in its decode layout (LlamaDecode.cs).
    /// </summary>
    public virtual Tensor DecodeLmHead(Tensor hidden, KvCache cache) => LmHead(hidden);

    /// <summary>Logits [batch, new tokens, vocab].</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null)
        => LmHead(ForwardHidden(inputIds, attentionMask, cache));

    /// <summary>
    /// Mixed precision (<c>--bf16</c>): activations are cast to this dtype after the embedding, and every matmul casts
    /// its weight to the activations' dtype; norms, softmax, log-softmax and losses stay fp32. Null: the weights' dtype.
    /// </summary>
    public ScalarType? ComputeDtype { get; set; }

    /// <summary>Recompute each decoder layer in backward instead of keeping its activations (<c>--gradient-checkpointing</c>).</summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>The LoRA adapters attached by <see cref="Models.Lora.Apply"/>, or null (a plain model).</summary>
    public LoraState? Lora { get; internal set; }

    /// <summary>Whether this forward should recompute its layers: training with autograd on and no KV cache.</summary>
    protected bool CheckpointLayers(KvCache? cache) => GradientCheckpointing && cache is null && training && is_grad_enabled();

    protected Tensor ToComputeDtype(Tensor x) => ComputeDtype is ScalarType d && x.dtype != d ? x.to(d) : x;

    /// <summary>The device seam: inputs made on the host follow the model to its device (a no-op on CPU).</summary>
    protected static Tensor OnModelDevice(Tensor t, Tensor like) => Devices.Same(t, like) ? t : t.to(like.device);

    /// <summary>An empty cache sized for this model, holding at most <paramref name="maxLength"/> tokens.</summary>
    public KvCache NewCache(int maxLength) => new(Config.NumLayers, maxLength);
}
