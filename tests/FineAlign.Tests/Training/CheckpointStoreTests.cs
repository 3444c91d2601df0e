using FineAlign.Tests.Support;
using FineAlign.Training;

namespace FineAlign.Tests.Training;

public class CheckpointStoreTests
{
    private static void WriteFake(string dir, string content)
    {
        File.WriteAllText(Path.Combine(dir, "payload.txt"), content);
        File.WriteAllText(Path.Combine(dir, CheckpointStore.StateFile), "{}");
    }

    [Fact]
    public void CrashBeforeRenameLeavesThePreviousCheckpointIntact()
    {
        using var tmp = TestPaths.NewTempDir();
        CheckpointStore.Save(tmp.Path, 5, d => WriteFake(d, "five"));

        Assert.Throws<IOException>(() => CheckpointStore.Save(tmp.Path, 10, d => WriteFake(d, "ten"), null,
            beforeCommit: _ => throw new IOException("simulated kill")));

        // The half-done folder exists but is never taken for a checkpoint.
        Assert.Single(Directory.GetDirectories(tmp.Path), d => Path.GetFileName(d).StartsWith(".tmp-"));
        Assert.False(Directory.Exists(CheckpointStore.PathFor(tmp.Path, 10)));
        Assert.Equal(CheckpointStore.PathFor(tmp.Path, 5), CheckpointStore.Latest(tmp.Path));
        Assert.Equal("five", File.ReadAllText(Path.Combine(CheckpointStore.Latest(tmp.Path)!, "payload.txt")));

        CheckpointStore.CleanTemporary(tmp.Path);
        Assert.Single(Directory.GetDirectories(tmp.Path));
    }

    [Fact]
    public void CleanTemporary_RemovesTheFoldersOfAKilledModelSave_AndNothingElse()
    {
        // A run killed inside its final model save leaves .model.tmp-* (being filled) or .model.old-* (being replaced).
        using var tmp = TestPaths.NewTempDir();
        CheckpointStore.Save(tmp.Path, 2, d => WriteFake(d, "2"));
        Assert.Throws<IOException>(() => FineAlign.Models.ModelIO.WriteFolder(Path.Combine(tmp.Path, "model"), d =>
        {
            File.WriteAllText(Path.Combine(d, "config.json"), "{}");
            throw new IOException("simulated kill");
        }));
        string killedTmp = Path.Combine(tmp.Path, ".model.tmp-0123456789ab"), killedOld = Path.Combine(tmp.Path, ".model.old-ba9876543210");
        Directory.CreateDirectory(killedTmp);
        Directory.CreateDirectory(killedOld);
        Directory.CreateDirectory(Path.Combine(tmp.Path, ".git"));           // not ours: kept
        Directory.CreateDirectory(Path.Combine(tmp.Path, "model"));
        CheckpointStore.CleanTemporary(tmp.Path);
        Assert.Equal(new[] { ".git", "checkpoint-2", "model" },
            Directory.GetDirectories(tmp.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());
    }

    [Fact]
    public void IncompleteOrForeignFoldersAreIgnored()
    {
        using var tmp = TestPaths.NewTempDir();
        CheckpointStore.Save(tmp.Path, 3, d => WriteFake(d, "3"));
        Directory.CreateDirectory(Path.Combine(tmp.Path, "checkpoint-99"));        // no trainer_state.json
        Directory.CreateDirectory(Path.Combine(tmp.Path, "checkpoint-abc"));
        Directory.CreateDirectory(Path.Combine(tmp.Path, ".tmp-checkpoint-50-x"));
        File.WriteAllText(Path.Combine(tmp.Path, ".tmp-checkpoint-50-x", CheckpointStore.StateFile), "{}");
        Assert.Equal(new long[] { 3 }, CheckpointStore.List(tmp.Path).Select(c => c.Step));
    }

    [Fact]
    public void SaveTotalLimitPrunesOldestAndOrderIsNumeric()
    {
        using var tmp = TestPaths.NewTempDir();
        foreach (long s in new long[] { 2, 9, 10, 100 })
            CheckpointStore.Save(tmp.Path, s, d => WriteFake(d, s.ToString()), keepLast: 2);
        Assert.Equal(new long[] { 10, 100 }, CheckpointStore.List(tmp.Path).Select(c => c.Step));
        Assert.Equal(2, Directory.GetDirectories(tmp.Path).Length); // pruned folders fully removed
    }

    [Fact]
    public void ResavingAStepReplacesIt()
    {
        using var tmp = TestPaths.NewTempDir();
        CheckpointStore.Save(tmp.Path, 4, d => WriteFake(d, "old"));
        CheckpointStore.Save(tmp.Path, 4, d => WriteFake(d, "new"));
        Assert.Equal("new", File.ReadAllText(Path.Combine(CheckpointStore.PathFor(tmp.Path, 4), "payload.txt")));
        Assert.Single(Directory.GetDirectories(tmp.Path));
    }
}
