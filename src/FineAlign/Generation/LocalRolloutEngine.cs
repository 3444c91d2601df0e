using FineAlign.Models;
using FineAlign.Text;

namespace FineAlign.Generation;

/// <summary>
/// <see cref="IRolloutEngine"/> over an in-process model with the batched KV-cache sampler (<see cref="TextGenerator"/>):
/// every prompt is repeated <see cref="RolloutRequest.SamplesPerPrompt"/> times in a row and the whole request is
/// one batch with one seeded sampling stream, so the same request gives the same samples.
/// </summary>
public sealed class LocalRolloutEngine(CausalLM model, TextTokenizer? tokenizer = null) : IRolloutEngine
{
    public IReadOnlyList<RolloutSample> Generate(RolloutRequest request)
    {
        request.Validate();
        var rows = new List<int[]>(request.Count);
        foreach (var p in request.PromptIds)
            for (int j = 0; j < request.SamplesPerPrompt; j++) rows.Add(p);
        var generated = TextGenerator.Generate(model, rows, new GenerationOptions
        {
            MaxNewTokens = request.MaxNewTokens, DoSample = true, Temperature = request.Temperature, TopP = request.TopP,
            TopK = request.TopK, Seed = request.Seed, EosTokenIds = request.StopTokenIds,
        }, tokenizer);
        return generated.Select(g => new RolloutSample(g.Tokens, g.LogProbs,
            g.FinishReason == FinishReason.Length ? RolloutFinish.Length : RolloutFinish.Stop)).ToList();
    }
}
