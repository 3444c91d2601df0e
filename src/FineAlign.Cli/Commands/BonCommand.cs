using System.Globalization;
using System.Text.Json.Nodes;
using FineAlign.Trainers;
using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Generation;
using FineAlign.Rewards;
using FineAlign.Text;
using TorchSharp;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign bon</c>: decoding-time alignment (best-of-n or reward-guided decoding) with any reward source.</summary>
public static class BonCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("bon",
            "Alignment without training: best-of-n sampling (--mode best-of-n: n samples per prompt, the highest reward kept) or reward-guided " +
            "decoding (--mode guided: every --chunk-tokens tokens, --n candidate continuations are re-ranked by the reward, in the spirit of DeAL). " +
            "Reports the mean reward against plain sampling with the same seed (and the true sentiment on the built-in prompts).");
        var model = cmd.Declare("--model", "runs/sft/model", "Model folder (HF format).", alias: "--policy");
        var reward = cmd.Declare<string[]>("--reward", ["lexicon"], "Reward source spec(s): " + RewardFlags.SpecHelp + ".");
        var retokenize = RewardFlags.DeclareRetokenize(cmd);
        var mode = cmd.Declare("--mode", "best-of-n", "best-of-n or guided.", check: v => v is "best-of-n" or "guided" ? null : "must be best-of-n or guided");
        var n = cmd.Declare("--n", 4, "Samples per prompt (best-of-n) or candidates per chunk (guided).", check: v => v >= 1 ? null : "must be at least 1");
        var chunk = cmd.Declare("--chunk-tokens", 8, "Guided: tokens generated between re-rankings.", check: v => v >= 1 ? null : "must be at least 1");
        var prompts = cmd.Declare<string?>("--prompts", null, "JSONL of prompts: a 'prompt' field per line, or a preference file (one prompt per pair) or a feedback file (each prompt once). Omitted: held-out prompts of the built-in corpus.");
        var numPrompts = cmd.Declare("--num-prompts", 64, "Prompts to use (the first N).", check: v => v >= 1 ? null : "must be at least 1");
        var corpus = CorpusFlags.Declare(cmd, "Reviews whose held-out prompts are used when --prompts is omitted.", 4000, 10);
        var corpusSize = corpus.Size;
        var corpusSeed = corpus.Seed;
        var maxNew = cmd.Declare("--max-new-tokens", 64, "Response length limit (tokens).", check: v => v >= 1 ? null : "must be at least 1");
        var temperature = cmd.Declare("--temperature", 1.0, "Sampling temperature.", check: v => v > 0 && double.IsFinite(v) ? null : "must be positive");
        var topP = cmd.Declare("--top-p", 1.0, "Nucleus sampling.", check: v => v is > 0 and <= 1 ? null : "must be in (0, 1]");
        var seed = cmd.Declare("--seed", 42, "Sampling seed.");
        var outPath = cmd.Declare<string?>("--out", null, "Write the chosen responses as JSONL (prompt, completion, reward, candidate_rewards).", alias: "-o");
        var pairsOut = cmd.Declare<string?>("--pairs-out", null, "Best-of-n: write each prompt's best and worst candidate as a preference pair (prompt, chosen, rejected, " +
            "score_chosen, score_rejected) for dpo/rm; prompts whose candidates all score the same are left out.");
        var feedbackOut = cmd.Declare<string?>("--feedback-out", null, "Best-of-n: write every candidate as binary feedback (prompt, completion, label = reward > " +
            "--feedback-threshold, reward) for bco/kto.");
        var feedbackThreshold = cmd.Declare("--feedback-threshold", 0.0, "Reward above which a candidate is a thumbs-up in --feedback-out (0: a classifier's logit, P > ½).");
        var chatTemplate = cmd.Declare<string?>("--chat-template", null, "For conversational prompts (message lists): " + GenerateCommand.ChatTemplateHelp + " Sampling then also stops at its end-of-turn token.");
        var threads = cmd.Declare("--threads", 0, "Torch CPU threads (0 = one per core).", check: v => v >= 0 ? null : "must be ≥ 0");
        var rollout = RolloutFlags.Declare(cmd, withSync: false);

        cmd.SetRecipeAction((r, ct) =>
        {
            if (r.Get(threads) > 0) torch.set_num_threads(r.Get(threads));
            string dir = ModelFolder.Resolve(r.Get(model));
            var tokenizer = TokenizerLoader.Load(dir);
            using var lm = Models.ModelIO.Load(dir);
            var source = RewardSpecs.Build(r.Get(reward), tokenizer, r.Get(retokenize), m => r.Error.WriteLine("warning: " + m));
            bool corpus = r.Get(prompts) is null;
            ChatTemplate? chat = null;
            var rows = r.Get(prompts) is string p
                ? PromptReader.ReadRows(p, () => chat = ChatTemplates.Resolve(r.Get(chatTemplate), tokenizer, dir)).Rows.Take(r.Get(numPrompts)).ToList()
                : null;
            var list = (rows?.Select(x => x.Prompt) ?? ReviewCorpus.Prompts(r.Get(corpusSeed), r.Get(corpusSize)).Eval).Take(r.Get(numPrompts)).ToList();
            if (list.Count == 0) throw new FineAlignException($"{r.Get(prompts)}: no prompts");
            var columns = OnlineRlFlags.CheckColumns(r.Get(prompts), rows, source, r.Get(reward));
            var gen = new GenerationOptions
            {
                MaxNewTokens = r.Get(maxNew), Temperature = r.Get(temperature), TopP = r.Get(topP), Seed = r.Get(seed),
                EosTokenIds = chat?.EndOfTurn.Id is int eot ? lm.Config.EosTokenIds.Append(eot).Distinct().ToArray() : null,
            };
            using var remote = rollout.Build(r, ".");
            if (remote is not null) r.Out.WriteLine($"bon: sampling on {string.Join(", ", remote.LiveEndpoints)}");
            IRolloutEngine engine = remote ?? (IRolloutEngine)new LocalRolloutEngine(lm, tokenizer);
            gen = gen with { EosTokenIds = gen.EosTokenIds ?? lm.Config.EosTokenIds };
            if (columns is not null && source.Columns.Count > 0 && r.Get(mode) == "guided")
                throw new FineAlignException("--mode guided scores prefixes; a reward that reads dataset columns (exact-match:, numeric:) needs --mode best-of-n");
            var plain = BestOfN.Generate(engine, tokenizer, list, source, 1, gen, columns: columns);
            var chosen = r.Get(mode) == "guided"
                ? RewardGuidedDecoding.Generate(lm, tokenizer, list, source, r.Get(n), r.Get(chunk), gen, engine: remote)
                : BestOfN.Generate(engine, tokenizer, list, source, r.Get(n), gen, columns: columns);
            if (r.Get(outPath) is string o)
            {
                using var sink = JsonlOutput.ToFile(o);
                foreach (var c in chosen)
                    sink.Write(new JsonObject
                    {
                        ["prompt"] = c.Prompt, ["completion"] = c.Best.Text, ["reward"] = c.Reward,
                        ["candidate_rewards"] = new JsonArray(c.CandidateRewards.Select(x => (JsonNode?)x).ToArray()),
                    });
                sink.Commit();
            }
            if ((r.Get(pairsOut) is not null || r.Get(feedbackOut) is not null) && r.Get(mode) != "best-of-n")
                throw new FineAlignException("--pairs-out and --feedback-out need --mode best-of-n (guided decoding keeps no whole candidates)");
            if (r.Get(pairsOut) is string po)
            {
                using var sink = JsonlOutput.ToFile(po);
                foreach (var c in chosen)
                {
                    var scores = c.CandidateRewards;
                    int best = Array.IndexOf(scores.ToArray(), scores.Max()), worst = Array.IndexOf(scores.ToArray(), scores.Min());
                    if (scores[best] <= scores[worst]) continue;
                    sink.Write(new JsonObject
                    {
                        ["prompt"] = c.Prompt, ["chosen"] = c.Candidates[best].Text, ["rejected"] = c.Candidates[worst].Text,
                        ["score_chosen"] = scores[best], ["score_rejected"] = scores[worst],
                    });
                }
                sink.Commit();
            }
            if (r.Get(feedbackOut) is string fo)
            {
                using var sink = JsonlOutput.ToFile(fo);
                foreach (var c in chosen)
                    for (int k = 0; k < c.Candidates.Count; k++)
                        sink.Write(new JsonObject
                        {
                            ["prompt"] = c.Prompt, ["completion"] = c.Candidates[k].Text,
                            ["label"] = c.CandidateRewards[k] > r.Get(feedbackThreshold), ["reward"] = c.CandidateRewards[k],
                        });
                sink.Commit();
            }
            var inv = CultureInfo.InvariantCulture;
            string what = r.Get(mode) == "guided" ? $"guided (n {r.Get(n)}, chunk {r.Get(chunk)})" : $"best-of-{r.Get(n)}";
            r.Out.WriteLine(string.Create(inv, $"bon: {list.Count} prompts; mean reward ({source.Name}): plain sampling {plain.Average(x => x.Reward):F4}, {what} {chosen.Average(x => x.Reward):F4}"));
            if (corpus)
                r.Out.WriteLine(string.Create(inv, $"bon: true sentiment: plain {plain.Average(x => Lexicon.TrueReward(x.Best.Text)):F4}, {what} {chosen.Average(x => Lexicon.TrueReward(x.Best.Text)):F4}; " +
                                                   $"distinct-2 {Evaluation.SentimentEval.DistinctN(plain.Select(x => x.Best.Text), 2):F4} → {Evaluation.SentimentEval.DistinctN(chosen.Select(x => x.Best.Text), 2):F4}"));
            return 0;
        });
        return cmd;
    }
}
