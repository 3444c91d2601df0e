using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Tests.Models;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using FineAlign.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Training;

/// <summary>Gradient checkpointing and bf16 mixed precision (ModelSetup) on tiny models.</summary>
[Collection("Serial torch RNG")]
public class RealScaleTests
{
    private static Dictionary<string, Tensor> Gradients(CausalLM model, Tensor ids, Tensor attn, Tensor mask, long seed)
    {
        model.zero_grad();
        manual_seed(seed);   // LoRA dropout draws from the global generator: the same masks in both runs
        CausalLmLoss.Loss(model, ids, attn, mask).backward();
        return model.named_parameters().Where(p => p.parameter.grad is not null).ToDictionary(p => p.name, p => p.parameter.grad!.clone());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Checkpointed_gradients_equal_plain_gradients_bit_for_bit(bool lora)
    {
        var model = ModelFactory.Create(LoraTests.Config("qwen2"), seed: 3);
        if (lora) Lora.Apply(model, new LoraSettings { R = 4, Dropout = 0.2 }, seed: 1);
        if (lora) using (no_grad()) foreach (var (n, p) in model.named_parameters()) if (n.Contains("lora_B")) p.normal_(0, 0.1);
        model.train();
        var ids = LoraTests.Ids();
        var attn = ones(2, 10, ScalarType.Int64);
        attn[1, 7..] = zeros(3, ScalarType.Int64);
        var mask = attn.ne(0);
        var plain = Gradients(model, ids, attn, mask, 17);
        model.GradientCheckpointing = true;
        var recomputed = Gradients(model, ids, attn, mask, 17);
        Assert.Equal(plain.Keys.OrderBy(k => k), recomputed.Keys.OrderBy(k => k));
        Assert.Equal(lora ? 2 * 7 * 2 : model.parameters().Count(), plain.Count);
        foreach (var (name, g) in plain)
            Assert.True(g.equal(recomputed[name]).all().item<bool>(), $"{name}: max |diff| {(g - recomputed[name]).abs().max().item<float>()}");
    }

    [Fact]
    public void Bf16_mixed_precision_keeps_fp32_masters_and_losses_and_tracks_fp32()
    {
        var config = LoraTests.Config();
        var fp32 = ModelFactory.Create(config, seed: 3);
        var bf16 = ModelFactory.Create(config, seed: 3);
        ModelSetup.Prepare(bf16, new TrainingOptions { Bf16 = true }, lora: null, seed: 0);
        Assert.All(bf16.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));      // fp32 master weights
        var ids = LoraTests.Ids();
        var mask = ones(2, 10, ScalarType.Bool);
        var hidden = bf16.ForwardHidden(ids);
        Assert.Equal(ScalarType.BFloat16, hidden.dtype);                                    // bf16 activations
        var l32 = CausalLmLoss.Loss(fp32, ids, null, mask);
        var l16 = CausalLmLoss.Loss(bf16, ids, null, mask);
        Assert.Equal(ScalarType.Float32, l16.dtype);                                        // fp32 loss
        Assert.True(Math.Abs(l32.item<float>() - l16.item<float>()) < 0.02, $"fp32 {l32.item<float>()} vs bf16 {l16.item<float>()}");
        l16.backward();
        Assert.All(bf16.parameters(), p => Assert.Equal(ScalarType.Float32, p.grad!.dtype)); // fp32 gradients for AdamW

        // LoRA + bf16: the frozen base is stored in bf16, the adapters stay fp32 masters.
        var lora = ModelFactory.Create(config, seed: 3);
        ModelSetup.Prepare(lora, new TrainingOptions { Bf16 = true, GradientCheckpointing = true }, new LoraSettings { R = 2 }, seed: 0);
        foreach (var (name, p) in lora.named_parameters())
            Assert.Equal(name.Contains(".lora_") ? ScalarType.Float32 : ScalarType.BFloat16, p.dtype);
        Assert.All(lora.named_parameters().Where(p => p.parameter.requires_grad), p => Assert.Contains(".lora_", p.name));
    }

    [Fact]
    public void Bf16_sft_lowers_the_loss_on_the_built_in_corpus_like_fp32()
    {
        using var dir = TestPaths.NewTempDir();
        var tok = new ByteTokenizer();
        var examples = FineAlign.Data.Corpus.BuiltinData.PretrainBlocks(tok, seed: 1, count: 40, contextLength: 32).Train;
        List<double> Run(bool bf16)
        {
            var model = ModelFactory.Create(ModelPresets.Create("tiny", tok, 96), seed: 4);
            var o = new TrainingOptions { OutputDir = Path.Combine(dir.Path, bf16 ? "bf16" : "fp32"), MaxSteps = 12, LearningRate = 1e-2,
                                          PerDeviceTrainBatchSize = 4, LoggingSteps = 1, SaveSteps = 0, Seed = 1, Bf16 = bf16 };
            ModelSetup.Prepare(model, o, null, 0);
            var r = CausalLmTrainer.Train(model, tok, examples, null, o);
            return r.LogHistory.Where(m => m.ContainsKey("loss")).Select(m => m["loss"]).ToList();
        }
        var a = Run(false);
        var b = Run(true);
        Assert.True(b[^1] < b[0] * 0.8, $"bf16 loss {b[0]:F3} → {b[^1]:F3}");
        double worst = a.Zip(b).Max(p => Math.Abs(p.First - p.Second) / p.First);
        Assert.True(worst < 0.05, $"bf16 curve departs from fp32 by {worst:P1} (fp32 {a[^1]:F4}, bf16 {b[^1]:F4})");
    }
    [Fact]
    public void Bf16_weights_cast_once_per_step_give_bit_identical_losses_and_gradients()
    {
        // Full bf16 fine-tuning (fp32 masters, tied LM head), LoRA on top, the head in chunks of 3 positions (each
        // recomputed in backward) and two micro-batches: every master is used many times per step.
        var model = ModelFactory.Create(LoraTests.Config("qwen2"), seed: 3);
        ModelSetup.Prepare(model, new TrainingOptions { Bf16 = true }, lora: null, seed: 0);
        Lora.Apply(model, new LoraSettings { R = 2 }, seed: 1);
        foreach (var p in model.parameters()) p.requires_grad = true;   // masters and adapters all train
        using (no_grad()) foreach (var (n, p) in model.named_parameters()) if (n.Contains("lora_B")) p.normal_(0, 0.1);
        var ids = LoraTests.Ids();
        var mask = ones(2, 10, ScalarType.Bool);
        (float[] Losses, Dictionary<string, Tensor> Grads) Step(bool castOnce)
        {
            model.zero_grad();
            manual_seed(17);   // LoRA dropout: the same masks in every run
            var losses = new List<float>();
            using (castOnce ? MasterCast.Step() : null)
                for (int micro = 0; micro < 2; micro++)
                {
                    var loss = CausalLmLoss.Loss(model, micro == 0 ? ids : ids.flip(1), null, mask);
                    losses.Add(loss.item<float>());
                    loss.backward();
                    if (castOnce) Assert.True(MasterCast.CachedCount > 0);
                }
            Assert.False(MasterCast.Active);
            return (losses.ToArray(), model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone()));
        }
        ChunkedLmHead.Chunk = 3;
        try
        {
        var plain = Step(castOnce: false);
        var once = Step(castOnce: true);
        Assert.Equal(plain.Losses, once.Losses);
        foreach (var (name, g) in plain.Grads)
        {
            Assert.Equal(ScalarType.Float32, once.Grads[name].dtype);
            Assert.True(g.equal(once.Grads[name]).all().item<bool>(), $"{name}: max |diff| {(g - once.Grads[name]).abs().max().item<float>()}");
        }

        // Closing the scope invalidates the copies: after the masters change, a new scope sees the new values.
        using (no_grad()) foreach (var p in model.parameters()) p.add_(0.01);
        var after = Step(castOnce: false);
        var afterOnce = Step(castOnce: true);
        Assert.NotEqual(plain.Losses, after.Losses);
        Assert.Equal(after.Losses, afterOnce.Losses);

        // Inside one scope a second forward casts nothing new.
        using (no_grad())
        using (MasterCast.Step())
        {
            model.ForwardHidden(ids);
            int n = MasterCast.CachedCount;
            // Every master the trunk reads is cast (projections, biases, adapters, norms); the embedding is looked up in fp32.
            Assert.Equal(model.parameters().Count() - 1, n);
            model.ForwardHidden(ids);
            Assert.Equal(n, MasterCast.CachedCount);
        }
        }
        finally
        {
            ChunkedLmHead.Chunk = null;
        }
    }
    [Fact]
    public void Recompute_forward_keeps_no_graph_of_the_function()
    {
        // What checkpointing saves memory with: fn's intermediates must not be kept by the forward (autograd off there),
        // only rebuilt in backward.
        var w = randn(4, 4).requires_grad_(true);
        var x = randn(3, 4).requires_grad_(true);
        var gradModes = new List<bool>();
        Tensor Fn(Tensor h, Tensor?[] _)
        {
            gradModes.Add(is_grad_enabled());
            var inner = h.matmul(w).tanh();
            gradModes.Add(inner.requires_grad);
            return inner.sum(1);
        }
        var y = Recompute.Apply(Fn, x);
        Assert.True(y.requires_grad);
        Assert.Equal(new[] { false, false }, gradModes);     // forward: no autograd, so no intermediates kept
        y.sum().backward();
        Assert.Equal(new[] { false, false, true, true }, gradModes);   // backward: recomputed with autograd
        var plainW = w.detach().clone().requires_grad_(true);
        var plainX = x.detach().clone().requires_grad_(true);
        plainX.matmul(plainW).tanh().sum(1).sum().backward();
        Assert.True(plainW.grad!.equal(w.grad!).all().item<bool>());
        Assert.True(plainX.grad!.equal(x.grad!).all().item<bool>());
    }
}
