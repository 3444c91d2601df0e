using System.Globalization;
using System.Text.Json;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Text;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign eval-policy</c>: one policy on your prompts with your reward — reward ± s.e., KL to the base model,
/// the fluency proxy, distinct-1/2, length and samples. The same numbers <c>report</c> tabulates.
/// </summary>
public static class EvalPolicyCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("eval-policy",
            "Evaluates a policy on held-out prompts: samples one response per prompt (temperature 1, fixed seed), scores it with --reward " +
            "(rm:PATH, tlcr:PATH, discrete:PATH, lexicon, SPEC@WEIGHT; several = weighted sum) and prints reward ± standard error, " +
            "KL(policy ‖ base) per response, the fluency proxy (mean log-prob per response token under the base model, and its perplexity), " +
            "distinct-1/2, mean length and sample responses. Without --prompts: the built-in corpus's held-out prompts (runs trained on it), " +
            "with its ground truth as the default reward and the corpus fluency measures.");
        var model = cmd.Declare<string?>("--model", null, "The policy: Hugging Face model folder (or a run folder with model/). Required.", alias: "-m");
        var output = cmd.Declare<string?>("--output", null, "Also write the numbers and every response as JSON to this file.", alias: "-o");
        var shown = cmd.Declare("--show-samples", 3, "Sample responses printed.", check: v => v >= 0 ? null : "must be ≥ 0");
        var flags = EvalFlags.Declare(cmd, prompts: 64);
        var rollout = RolloutFlags.Declare(cmd, withSync: false);
        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            string policyDir = ModelFolder.Resolve(r.Get(model) ?? throw new UsageException("--model is required"));
            string baseDir = ModelFolder.Resolve(r.Get(flags.Base) ?? throw new UsageException("--base is required (KL and the fluency proxy are measured against it)"));
            if (r.Get(flags.PromptsFile) is null && !r.Get(flags.BuiltinCorpus))
                throw new UsageException("--prompts FILE is required (or --builtin-corpus for a policy trained on the built-in corpus)");
            var settings = flags.Settings(r, baseDir);
            var tokenizer = TokenizerLoader.Load(baseDir);
            using var baseModel = ModelIO.Load(baseDir);
            using var policy = ModelIO.Load(policyDir);
            if (policy.Config.VocabSize != baseModel.Config.VocabSize)
                throw new FineAlignException($"{policyDir}: vocabulary {policy.Config.VocabSize} differs from the base model's {baseModel.Config.VocabSize}; KL to the base is undefined");
            var reward = EvalReward.Build(settings.Reward, tokenizer, w => r.Error.WriteLine("warning: " + w));
            var prompts = settings.PromptList();
            var columns = settings.PromptsFile is string file ? reward.ColumnsOf(file, FineAlign.Data.PromptReader.ReadRows(file).Rows.Take(prompts.Count).ToList()) : null;
            using var remote = rollout.Build(r, ".");
            if (remote is not null) r.Out.WriteLine($"eval-policy: sampling on {string.Join(", ", remote.LiveEndpoints)} (KL and fluency computed here with {policyDir})");
            var result = CliProgress.Run(r.Out, _ => PolicyEval.Run(policy, baseModel, tokenizer, prompts, reward, settings.Options(), remote, columns));

            var inv = CultureInfo.InvariantCulture;
            // The servers only sample; if they hold other weights than --model, KL and reward describe a different policy.
            if (remote is not null && result.SamplerGap is double gap && gap > 1e-2)
                r.Error.WriteLine(string.Create(inv, $"warning: the rollout servers' log-probs differ from {policyDir}'s by {gap:F4} per token on average: they serve other weights than --model"));
            r.Out.WriteLine(string.Create(inv, $"eval-policy: {policyDir} vs base {baseDir}, {result.Count} responses (≤ {settings.MaxNewTokens} new tokens, T = 1, seed {settings.Seed})"));
            r.Out.WriteLine(string.Create(inv, $"  reward ({reward.Label}): {result.Reward:F4} ± {result.RewardSe:F4} (s.e.)"));
            r.Out.WriteLine(string.Create(inv, $"  KL to base: {result.Kl:F3} nats per response"));
            r.Out.WriteLine(string.Create(inv, $"  fluency proxy: base log-prob {result.BaseLogProbPerToken:F3} per token (perplexity {result.BasePerplexity:F2})"));
            if (result.HasCorpusFluency)
                r.Out.WriteLine(string.Create(inv, $"  corpus words {result.CorpusWordShare:P1}, well-formed responses {result.WellFormedShare:P1}, reward over well-formed {result.RewardWellFormed:F4}"));
            r.Out.WriteLine(string.Create(inv, $"  distinct-1 {result.Distinct1:F3}, distinct-2 {result.Distinct2:F3}, mean length {result.MeanLength:F1} tokens"));
            foreach (var s in result.Responses.Take(r.Get(shown)))
                r.Out.WriteLine(string.Create(inv, $"  [{s.Reward:F3}] {s.Prompt.ReplaceLineEndings(" ")}|{ComparisonReport.ShownText(s.Response).ReplaceLineEndings(" ")}"));
            if (r.Get(output) is string path)
            {
                var json = JsonSerializer.Serialize(new
                {
                    model = policyDir, @base = baseDir, reward = reward.Label, settings, metrics = result.Metrics(""),
                    responses = result.Responses.Select(x => new
                    {
                        prompt = x.Prompt, response = x.Response, reward = x.Reward, kl = x.Kl, base_logprob = x.BaseLogProb, tokens = x.Tokens,
                        corpus_word_share = x.Corpus?.CorpusWordShare, well_formed = x.Corpus?.WellFormed,
                    }),
                }, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower });
                AtomicFile.WriteAllText(path, json);
                r.Out.WriteLine($"eval-policy: details → {path}");
            }
            return 0;
        });
        return cmd;
    }
}
