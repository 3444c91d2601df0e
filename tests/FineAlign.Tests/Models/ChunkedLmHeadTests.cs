using FineAlign.Models;
using FineAlign.Objectives;
using static TorchSharp.torch;

namespace FineAlign.Tests.Models;

public class ChunkedLmHeadTests
{
    private static (CausalLM Model, Tensor Ids, Tensor Attn, Tensor Mask) Setup(bool tied)
    {
        var model = ModelFactory.Create(ModelTests.Llama(kvHeads: 2, tied: tied), seed: 3);
        var g = new TorchSharp.torch.Generator(5);
        var ids = randint(3, 50, new long[] { 3, 9 }, generator: g);
        var attn = ones(3, 9, ScalarType.Int64);
        attn[2, 6..] = zeros(3, ScalarType.Int64);                  // right padding on row 2
        var mask = attn.ne(0).clone();
        mask[.., ..3] = zeros(3, 3, ScalarType.Bool);               // prompt: not a target
        return (model, ids, attn, mask);
    }

    [Theory]
    [InlineData(false, 1)]
    [InlineData(false, 4)]
    [InlineData(true, 5)]
    [InlineData(true, 1024)]
    public void Chunked_log_probs_equal_the_full_logits_path(bool tied, int chunk)
    {
        var (model, ids, attn, mask) = Setup(tied);
        using var _ = no_grad();
        var full = CausalLmLoss.TokenLogProbs(model.Forward(ids, attn), ids) * CausalLmLoss.TargetMask(mask);
        var hidden = model.ForwardHidden(ids, attn);
        var chunked = ChunkedLmHead.TokenLogProbs(model, hidden, ids, mask, chunk: chunk);
        double diff = (full - chunked).abs().max().item<float>();
        // Row-wise the same arithmetic; the GEMM kernel for another row count may round the last bit differently.
        Assert.True(diff <= 1e-6, $"max |diff| = {diff}");
        // Non-target positions are exactly 0 and never computed.
        Assert.Equal(0f, chunked[.., ..2].abs().sum().item<float>());
        var fullSeq = CausalLmLoss.SequenceLogProbs(model.Forward(ids, attn), ids, mask);
        var chunkSeq = CausalLmLoss.SequenceLogProbs(model, ids, attn, mask);
        Assert.True((fullSeq - chunkSeq).abs().max().item<float>() <= 1e-5);
    }

    [Fact]
    public void Chunked_loss_gradients_equal_the_full_logits_gradients()
    {
        var (model, ids, attn, mask) = Setup(tied: true);
        var fullLoss = CausalLmLoss.Loss(model.Forward(ids, attn), ids, mask);
        fullLoss.backward();
        var expected = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        model.zero_grad();
        var chunkLoss = CausalLmLoss.Loss(model, ids, attn, mask);
        Assert.True(Math.Abs(fullLoss.item<float>() - chunkLoss.item<float>()) <= 1e-6);
        ChunkedLmHead.Chunk = 4;
        try
        {
            model.zero_grad();
            CausalLmLoss.Loss(model, ids, attn, mask).backward();
        }
        finally { ChunkedLmHead.Chunk = null; }
        foreach (var (name, p) in model.named_parameters())
        {
            double diff = (expected[name] - p.grad!).abs().max().item<float>();
            double scale = expected[name].abs().max().item<float>();
            Assert.True(diff <= 1e-6 + 1e-5 * scale, $"{name}: max |diff| = {diff} (scale {scale})");
        }
    }
}
