using FineAlign.Data;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign folds</c>: writes fold K of a k-fold split of a JSONL file as two files (the same partition as
/// <c>--folds/--fold/--fold-seed</c> of rm, dpo, kto, bco, eval-rm and eval-pref), so other tools — a pretraining text
/// file built from the training lines, an outside reference — can use exactly the same folds.
/// </summary>
public static class FoldsCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("folds",
            "Write fold K of a k-fold cross-validation split of a file's lines: the other folds' lines to --train-out, fold K's " +
            "to --test-out, in file order. The partition is the one rm/dpo/kto/bco/eval-rm/eval-pref use with the same " +
            "--folds/--fold/--fold-seed.");
        var data = cmd.Declare<string?>("--data", null, "The file to split (any line-based file, e.g. JSONL preference pairs).");
        var folds = cmd.Declare<int?>("--folds", null, "Number of folds N (at least 2).");
        var fold = cmd.Declare<int?>("--fold", null, "The held-out fold K, 1 to N.");
        var seed = cmd.Declare("--fold-seed", 0, "Seed of the partition.");
        var trainOut = cmd.Declare<string?>("--train-out", null, "File for the lines of the other folds.");
        var testOut = cmd.Declare<string?>("--test-out", null, "File for the lines of fold K.");
        cmd.SetRecipeAction((r, ct) =>
        {
            string path = r.Get(data) ?? throw new FineAlignException("folds needs --data: the file to split.");
            if (!File.Exists(path)) throw new FineAlignException($"{path}: no such file");
            var spec = FoldSpec.From(r.Get(folds), r.Get(fold), r.Get(seed))
                       ?? throw new FineAlignException("folds needs --folds N and --fold K.");
            string train = r.Get(trainOut) ?? throw new FineAlignException("folds needs --train-out FILE.");
            string test = r.Get(testOut) ?? throw new FineAlignException("folds needs --test-out FILE.");
            var (nTrain, nTest) = KFold.WriteFiles(path, spec, train, test);
            r.Out.WriteLine($"folds: {spec.Describe(path)}: {nTrain} lines to {train}, {nTest} lines to {test}");
            return 0;
        });
        return cmd;
    }
}
