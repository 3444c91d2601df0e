namespace FineAlign;

/// <summary>Small files written whole or not at all: a temporary sibling renamed over the target (atomic on one file system).</summary>
public static class AtomicFile
{
    public static void WriteAllText(string path, string text)
    {
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, text);
        File.Move(tmp, path, overwrite: true);
    }
}
