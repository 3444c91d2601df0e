using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Text;
using FineAlign.Training;

namespace FineAlign.Trainers;

/// <summary>
/// Next-token training on tokenised examples: the loop behind both <c>pretrain</c> (every token a target)
/// and <c>sft</c> (completion tokens only). Checkpoints hold a Hugging Face folder (<c>checkpoint-N/model/</c>)
/// plus optimizer/RNG state; the finished model is saved to <c>{output_dir}/model</c>.
/// </summary>
public static class CausalLmTrainer
{
    /// <summary>Sub-folder of the output (and of each checkpoint) holding the HF model.</summary>
    public const string ModelFolder = RunLayout.ModelFolder;

    public static TrainingResult Train(CausalLM model, TextTokenizer tokenizer, IReadOnlyList<TokenizedExample> train,
        IReadOnlyList<TokenizedExample>? eval, TrainingOptions options, IProgress<ProgressUpdate>? progress = null,
        CancellationToken cancellation = default)
    {
        if (train.Count == 0) throw new FineAlignException("no training examples left after tokenisation; check the data file and max_length.");
        int context = model.Config.MaxPositionEmbeddings;
        var tooLong = train.Concat(eval ?? Array.Empty<TokenizedExample>()).FirstOrDefault(e => e.Length > context);
        if (tooLong is not null)
            throw new FineAlignException($"an example has {tooLong.Length} tokens but the model's context is {context}; lower max_length.");

        int pad = tokenizer.PaddingId;
        var step = new CausalLmStep(model);
        var trainSource = new BatchSource<TokenBatch>(train.Count, idx => Collator.Collate(idx.Select(i => train[i]).ToList(), pad));
        var evalSource = eval is { Count: > 0 }
            ? new BatchSource<TokenBatch>(eval.Count, idx => Collator.Collate(idx.Select(i => eval[i]).ToList(), pad))
            : null;

        using var trainer = new Trainer<TokenBatch>(model, options, b => step.Compute(b.InputIds, b.AttentionMask, b.LossMask), trainSource, evalSource)
        {
            Progress = progress,
            SaveModelWeights = dir => ModelIO.Save(model, Path.Combine(dir, ModelFolder), tokenizer),
            LoadModelWeights = dir => ModelIO.LoadInto(model, Path.Combine(dir, ModelFolder)),
        };
        var result = trainer.Train(cancellation);
        if (result.Completed) ModelIO.Save(model, Path.Combine(options.OutputDir, ModelFolder), tokenizer);
        return result;
    }
}
