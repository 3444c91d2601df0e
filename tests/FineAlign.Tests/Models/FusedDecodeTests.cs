using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Models;

/// <summary>
/// The decode path (issue #18): fused q/k/v and gate/up weights share storage with the Hugging Face parameters, so
/// nothing outside the decode forward can see a difference, and the decode forward stays the model.
/// </summary>
public class FusedDecodeTests
{
    private static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().to_type(ScalarType.Float64).item<double>();

    /// <summary>Logits of <paramref name="ids"/> through the cache: a prefill of all but the last two tokens, then two single-token steps.</summary>
    private static Tensor Cached(CausalLM model, Tensor ids, Tensor? mask = null, bool maskEveryStep = true)
    {
        using var _ = no_grad();
        long t = ids.shape[1];
        using var cache = model.NewCache((int)t);
        var parts = new List<Tensor> { model.Forward(ids.narrow(1, 0, t - 2), mask?.narrow(1, 0, t - 2), cache) };
        for (long s = t - 2; s < t; s++)
            parts.Add(model.Forward(ids.narrow(1, s, 1), maskEveryStep ? mask?.narrow(1, 0, s + 1) : null, cache));
        return cat(parts, 1);
    }

    private static Tensor Full(CausalLM model, Tensor ids, Tensor? mask = null)
    {
        using var _ = no_grad();
        return model.Forward(ids, mask);
    }

    [Fact]
    public void Decoding_turns_the_projections_into_views_of_one_weight_and_in_place_writes_reach_it()
    {
        using var model = ModelFactory.Create(ModelTests.ByName("llama-gqa"), 5);
        using var ids = LoraTests.Ids();
        var names = model.state_dict().Keys.ToList();
        var before = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        string fingerprint = WeightCopy.Fingerprint(model);
        Assert.True(MaxDiff(Full(model, ids), Cached(model, ids)) < 1e-5);
        Assert.Equal(fingerprint, WeightCopy.Fingerprint(model));   // reads each tensor's bytes: views at an offset included

        // Same names, shapes and values as before the first decode (the state dict is what safetensors and GGUF export write).
        var after = model.state_dict();
        Assert.Equal(names, after.Keys.ToList());
        foreach (var (name, t) in before) Assert.True(MaxDiff(t, after[name]) == 0, name);
        var attention = model.modules().OfType<LlamaAttention>().First();
        var fused = typeof(LlamaAttention).GetField("_qkv", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(attention) as FusedProjections;
        Assert.NotNull(fused);
        Assert.True(fused!.IsBound);

        // An in-place write to one projection (what an optimizer step, a checkpoint load or a weight sync does) is seen by
        // the fused decode path at once: it cannot go stale.
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                if (name.EndsWith("k_proj.weight") || name.EndsWith("up_proj.weight")) p.mul_(1.5);
        Assert.True(fused.IsBound);
        Assert.True(MaxDiff(Full(model, ids), Cached(model, ids)) < 1e-5);
        using var original = ModelFactory.Create(ModelTests.ByName("llama-gqa"), 5);
        Assert.True(MaxDiff(Cached(original, ids), Cached(model, ids)) > 1e-3);   // the write did change the model
    }

    [Fact]
    public void A_model_cast_after_decoding_is_fused_again()
    {
        using var model = ModelFactory.Create(ModelTests.ByName("llama-allbias"), 6);
        using var ids = LoraTests.Ids(8);
        _ = Cached(model, ids);
        model.to(ScalarType.Float64);   // replaces every parameter object
        var attention = model.modules().OfType<LlamaAttention>().First();
        var fused = (FusedProjections)typeof(LlamaAttention).GetField("_qkv", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(attention)!;
        Assert.False(fused.IsBound);
        Assert.True(MaxDiff(Full(model, ids), Cached(model, ids)) < 1e-12);
        Assert.True(fused.IsBound);
    }

    [Fact]
    public void Training_after_decoding_is_bit_for_bit_training_before_it()
    {
        // The decode path must not change a single training number (the training forward does not use the fused weight).
        (float Loss, float[] Grad) Step(CausalLM m, Tensor ids)
        {
            m.train();
            m.zero_grad();
            using var logits = m.Forward(ids);
            using var loss = logits.log_softmax(-1).narrow(1, 0, 9).gather(-1, ids.narrow(1, 1, 9).unsqueeze(-1)).mean().neg();
            loss.backward();
            var q = m.named_parameters().First(p => p.name.EndsWith("layers.0.self_attn.q_proj.weight")).parameter;
            return (loss.item<float>(), q.grad!.flatten().data<float>().ToArray());
        }
        using var ids = LoraTests.Ids(9);
        using var fresh = ModelFactory.Create(ModelTests.ByName("llama-gqa"), 7);
        using var decoded = ModelFactory.Create(ModelTests.ByName("llama-gqa"), 7);
        _ = TextGenerator.Generate(decoded, new[] { new[] { 3, 4, 5 } }, new GenerationOptions { MaxNewTokens = 4, DoSample = false, EosTokenIds = Array.Empty<int>() });
        var a = Step(fresh, ids);
        var b = Step(decoded, ids);
        Assert.Equal(a.Loss, b.Loss);
        Assert.Equal(a.Grad, b.Grad);

        // An optimizer step on the views lands in the fused weight: decoding sees the trained model.
        using var opt = optim.AdamW(decoded.parameters(), 0.01);
        opt.step();
        decoded.eval();
        Assert.True(MaxDiff(Full(decoded, ids), Cached(decoded, ids)) < 1e-5);
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("qwen2")]
    public void Lora_adapters_stay_per_projection_on_the_decode_path(string type)
    {
        using var model = LoraTests.WithTrainedAdapter(LoraTests.Config(type));
        using var ids = LoraTests.Ids(10);
        var names = Lora.AdapterTensors(model).Select(kv => kv.Key).ToList();
        Assert.True(MaxDiff(Full(model, ids), Cached(model, ids)) < 1e-5);
        Assert.Equal(names, Lora.AdapterTensors(model).Select(kv => kv.Key).ToList());   // PEFT's names, one A/B per projection
        // Adapters off (the reference model of DPO/PPO): the base weights alone, also on the decode path.
        using var off = Lora.AdapterOff(model);
        Assert.True(MaxDiff(Full(off, ids), Cached(off, ids)) < 1e-5);
        Assert.True(MaxDiff(Cached(model, ids), Cached(off, ids)) > 1e-4);
    }

    [Theory]
    [InlineData("llama-gqa")]
    [InlineData("mistral-window3")]
    [InlineData("gpt2")]
    public void Steps_without_a_mask_continue_the_padding_the_cache_recorded(string arch)
    {
        using var model = ModelFactory.Create(ModelTests.ByName(arch), 12);
        using var ids = randint(3, 50, new long[] { 2, 8 }, generator: new torch.Generator(4));
        using var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1 }).view(2, 8);
        using var withMasks = Cached(model, ids, mask, maskEveryStep: true);
        using var cacheOnly = Cached(model, ids, mask, maskEveryStep: false);
        using var full = Full(model, ids, mask);
        Assert.True(MaxDiff(withMasks, cacheOnly) < 1e-5, arch);
        Assert.True(MaxDiff(full.narrow(1, 3, 5), cacheOnly.narrow(1, 3, 5)) < 1e-5, arch);
    }
}
